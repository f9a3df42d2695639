"""Sim engines in one process on a topology: the first token of a decode with a handoff reports its pull
(bytes, modelled seconds); two pulls into one host share its NIC and take longer than into two hosts;
a pull from another rack is slower."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from protocol.engine_args import SimArgs
from protocol.sim_topology import SimTopology
from protocol.types import KvPull, SamplingSpec
from worker.engine import EngineRequest, EngineSpec, build_engine
from worker.engines.sim import SimEngine
from worker.engines.sim.timing import kv_bytes

# 1 MB/s NICs with no latency: the 40-token prompt's 10 blocks of 4 x 1 KiB tokens take 41 ms.
BANDWIDTH = 1e6
TOPOLOGY = SimTopology(workers_per_host=2, racks=2, cross_rack_gbps=BANDWIDTH * 8 / 1e9 / 4)  # 4x slower
PROMPT = tuple(range(1, 41))
SAMPLING = SamplingSpec(max_tokens=2, temperature=0.0)
Factory = Callable[[str, str], Awaitable[SimEngine]]


@pytest.fixture
async def make() -> AsyncIterator[Factory]:
    engines: list[SimEngine] = []

    async def factory(worker_id: str, host: str) -> SimEngine:
        spec = EngineSpec(model="", worker_id=worker_id, role="both", handoff_host=host,
                          args=SimArgs(profile="tiny-fast", link_bandwidth_bytes_per_s=BANDWIDTH, link_latency_s=0.0),
                          sim_topology=TOPOLOGY)
        engine = build_engine(spec)
        assert isinstance(engine, SimEngine)
        await engine.start()
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        await engine.shutdown()


async def handoff_of(prefill: SimEngine, rid: str, prompt: tuple[int, ...] = PROMPT) -> EngineRequest:
    """Prefill ``prompt`` on ``prefill``; the decode request that pulls its KV."""
    last = None
    async for delta in prefill.generate(EngineRequest(rid, prompt, SAMPLING, remote_decode=True)):
        last = delta
    assert last is not None and last.handoff is not None
    return EngineRequest(f"{rid}-d", prompt, SAMPLING, handoff=last.handoff)


async def pull(decode: SimEngine, request: EngineRequest) -> KvPull:
    """Decode ``request``; the pull its first delta reports (and no other delta does)."""
    deltas = [d async for d in decode.generate(request)]
    assert deltas[0].token_ids and deltas[0].kv_pull is not None
    assert all(d.kv_pull is None for d in deltas[1:])
    return deltas[0].kv_pull


async def test_the_first_token_reports_the_modelled_pull(make: Factory) -> None:
    prefill, decode = await make("p", "127.1.1.1"), await make("d", "127.2.1.1")
    report = await pull(decode, await handoff_of(prefill, "a"))
    blocks = len(PROMPT) // 4
    assert report.bytes == kv_bytes(decode.profile, blocks) == 40960
    assert report.seconds == pytest.approx(report.bytes / BANDWIDTH)  # exactly the model, no wait
    # A decode without a handoff pulls nothing and reports nothing.
    deltas = [d async for d in decode.generate(EngineRequest("local", PROMPT, SAMPLING))]
    assert all(d.kv_pull is None for d in deltas)


async def test_two_pulls_into_one_host_share_its_nic(make: Factory) -> None:
    prefill = await make("p", "127.1.1.1")
    one_host = [await make("d0", "127.2.1.1"), await make("d1", "127.2.1.1")]
    two_hosts = [await make("d2", "127.2.1.2"), await make("d3", "127.2.1.3")]
    single = len(PROMPT) // 4 * 4 * 1024 / BANDWIDTH
    for engines, expected in ((one_host, [single, 2 * single]), (two_hosts, [single, single])):
        requests = [await handoff_of(prefill, f"{e.engine_id}-r") for e in engines]
        loop = asyncio.get_running_loop()
        started = loop.time()
        reports = await asyncio.gather(*(pull(e, r) for e, r in zip(engines, requests, strict=True)))
        took = loop.time() - started
        assert sorted(r.seconds for r in reports) == pytest.approx(expected, rel=0.05)
        assert took >= max(expected)  # the wall clock agrees with the reports
    # Shared: the second pull waited for the first; apart: they ran side by side.


async def test_a_pull_from_another_rack_is_slower(make: Factory) -> None:
    near_source, far_source = await make("p0", "127.1.1.1"), await make("p1", "127.1.2.1")
    decode = await make("d", "127.2.1.1")
    near = await pull(decode, await handoff_of(near_source, "n"))
    far = await pull(decode, await handoff_of(far_source, "f", tuple(t + 100 for t in PROMPT)))  # not cached there
    assert near.bytes == far.bytes
    assert far.seconds == pytest.approx(4 * near.seconds)
