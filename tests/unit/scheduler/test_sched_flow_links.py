"""What ``RequestFlow`` measures (fake clients, no I/O): each prefill worker's speed reaches the router's
``WorkerState`` and ``kv_aware``; each handoff's pull feeds the measured link table of its (prefill host,
decode host) pair and its gauges, from the decode worker's report or, without one, as an upper bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.config import ServerConfig
from orchestrator.flow import RequestFlow, worker_state
from orchestrator.metrics import Metrics
from orchestrator.placement import FlowRequest
from orchestrator.pools.pool import WorkerHandle, WorkerPool
from orchestrator.pools.speed import PrefillSpeed
from orchestrator.scheduler.disagg_policy import DisaggPolicy
from orchestrator.scheduler.link_meter import MeasuredLinks
from orchestrator.scheduler.links import LinkTable
from orchestrator.scheduler.plugin import PluginEnv
from orchestrator.scheduler.prefix_index import PrefixIndex
from orchestrator.scheduler.profiles import build_pipeline, preset
from orchestrator.scheduler.router import Router
from protocol.types import GenerateCall, KVHandoff, KvPull, SamplingSpec, TokenChunk

BS = 4
PROMPT = tuple(range(500, 756))  # 256 tokens
KV_BYTES = 64


@dataclass
class Client:
    """A worker whose Prefill takes ``prefill_s`` and whose Generate streams ``chunks``."""

    worker_id: str
    prefill_s: float = 0.0
    chunks: list[TokenChunk] = field(default_factory=lambda: [TokenChunk((7,)), TokenChunk((8,), True, "length")])

    async def prefill(self, call: Any, timeout_s: float) -> KVHandoff:
        await asyncio.sleep(self.prefill_s)
        return KVHandoff(engine_id=self.worker_id, block_ids=((1,),), host="side-channel", port=1,
                         request_id=call.request_id, first_token=7, prompt_tokens=len(call.prompt_token_ids))

    async def generate(self, call: GenerateCall, first_s: float, inter_s: float,
                       deadline_s: float | None = None) -> AsyncIterator[TokenChunk]:
        for chunk in self.chunks:
            yield chunk

    async def abort(self, request_id: str) -> bool:
        return True


def handle(worker_id: str, host: str, **client: Any) -> WorkerHandle:
    return WorkerHandle(client=Client(worker_id, **client), description=SimpleNamespace(host=host))  # type: ignore[arg-type]


def make_flow(prefill: Sequence[WorkerHandle], decode: Sequence[WorkerHandle]) -> tuple[RequestFlow, Metrics]:
    env = PluginEnv(seed=3)
    router = Router(model="m", block_size=BS, index=PrefixIndex("m", BS),
                    prefill=build_pipeline(preset("kv_aware"), env), decode=build_pipeline(preset("decode"), env),
                    disagg=DisaggPolicy(min_remote_tokens=0))
    metrics = Metrics()
    flow = RequestFlow(router=router, prefill=WorkerPool("prefill", list(prefill), 8),
                       decode=WorkerPool("decode", list(decode), 8), metrics=metrics, server=ServerConfig(),
                       prefill_policy="kv_aware", decode_policy="decode", kv_bytes_per_token=KV_BYTES,
                       links=MeasuredLinks(LinkTable()))
    return flow, metrics


async def serve(flow: RequestFlow, rid: str) -> str:
    """Place and stream one request; returns its prefill worker."""
    r = FlowRequest(rid, PROMPT, SamplingSpec(max_tokens=2))
    placement = await flow.place(r)
    assert [c async for c in flow.stream(r, placement)]
    assert placement.prefill_worker is not None
    return placement.prefill_worker


# -- prefill speed ------------------------------------------------------------------------------------
def test_speed_of_an_idle_worker_is_its_tokens_over_its_time() -> None:
    speed = PrefillSpeed(alpha=0.5)
    assert speed.tokens_per_s == 0.0  # unknown: kv_aware's default applies
    speed.started(10.0, idle=True)
    speed.ended(10.5, 1000)
    assert speed.tokens_per_s == 2000.0
    speed.started(20.0, idle=True)
    speed.ended(20.25, 1000)  # EW means: 1000 tokens over 0.375 s
    assert speed.tokens_per_s == pytest.approx(1000 / 0.375)


def test_queued_rpcs_are_charged_their_own_compute_time_only() -> None:
    """Three RPCs sent at once to a worker computing 1000 tokens/s end at 1, 2 and 3 s: each is charged
    the second since the previous one ended, not its wait, so the speed stays 1000 tokens/s."""
    speed = PrefillSpeed()
    speed.started(0.0, idle=True)
    speed.started(0.0, idle=False)
    speed.started(0.0, idle=False)
    for end in (1.0, 2.0, 3.0):
        speed.ended(end, 1000)
    assert speed.tokens_per_s == pytest.approx(1000.0)
    speed.failed(3.5)  # its half second is nobody's compute
    speed.started(4.0, idle=True)
    speed.ended(5.0, 1000)
    assert speed.tokens_per_s == pytest.approx(1000.0)


async def test_a_prefill_rpc_sets_the_speed_the_router_sees() -> None:
    p = handle("p", "hp", prefill_s=0.05)
    flow, metrics = make_flow([p], [handle("d", "hd")])
    assert worker_state(p, 8).prefill_tokens_per_s == 0.0
    await serve(flow, "r1")
    rate = p.prefill_speed.tokens_per_s
    assert 0 < rate <= 256 / 0.05  # all 256 tokens uncached, over at least the RPC's 50 ms
    assert worker_state(p, 8).prefill_tokens_per_s == rate
    assert metrics.registry.get_sample_value("pdserve_prefill_seconds_count", {"model": ""}) == 1


async def test_kv_aware_sends_the_prompt_to_the_faster_prefill_worker() -> None:
    """``fast`` has 500 tokens queued: at equal (unknown) speeds ``slow`` is sooner; at the measured speeds
    (1,000 and 100,000 tokens/s) ``fast`` is."""
    slow, fast = handle("slow", "h1"), handle("fast", "h2")
    fast.queued_prefill_tokens = 500
    flow, _ = make_flow([slow, fast], [handle("d", "hd")])
    assert await serve(flow, "r1") == "slow"
    for h, seconds in ((slow, 1.0), (fast, 0.01)):
        h.prefill_speed = PrefillSpeed()
        h.prefill_speed.started(0.0, idle=True)
        h.prefill_speed.ended(seconds, 1000)
    assert worker_state(slow, 8).prefill_tokens_per_s == pytest.approx(1000.0)
    assert await serve(flow, "r2") == "fast"


# -- links --------------------------------------------------------------------------------------------
async def test_the_decode_workers_pull_report_feeds_its_pair() -> None:
    report = [TokenChunk((7,), kv_pull=KvPull(bytes=4_000_000, seconds=0.002)), TokenChunk((8,), True, "length")]
    flow, metrics = make_flow([handle("p", "hp")], [handle("d", "hd", chunks=report)])
    await serve(flow, "r1")
    (estimate,) = flow.links.estimates().values()
    assert list(flow.links.estimates()) == [("hp", "hd")]  # the workers' hosts, not the handoff's side channel
    assert estimate.bandwidth_bytes_per_s == pytest.approx(2e9) and estimate.samples == 1
    labels = {"model": "", "src": "hp", "dst": "hd"}
    assert metrics.registry.get_sample_value("pdserve_link_bandwidth_bytes_per_second", labels) == pytest.approx(2e9)
    assert metrics.registry.get_sample_value("pdserve_link_pulls_total", {**labels, "measure": "worker"}) == 1
    assert flow.links.snapshot().bandwidth("hp", "hd") == pytest.approx(2e9)


async def test_without_a_report_the_generate_to_first_token_time_is_an_upper_bound() -> None:
    flow, metrics = make_flow([handle("p", "hp")], [handle("d", "hd")])
    await serve(flow, "r1")
    (estimate,) = flow.links.estimates().values()
    assert estimate.samples == 1 and estimate.bandwidth_bytes_per_s > 0
    labels = {"model": "", "src": "hp", "dst": "hd", "measure": "upper_bound"}
    assert metrics.registry.get_sample_value("pdserve_link_pulls_total", labels) == 1


async def test_a_request_without_handoff_measures_no_link() -> None:
    flow, _ = make_flow([], [handle("d", "hd")])  # no prefill worker: the decode worker prefills
    r = FlowRequest("r", PROMPT, SamplingSpec(max_tokens=2))
    placement = await flow.place(r)
    assert placement.handoff is None
    assert [c async for c in flow.stream(r, placement)]
    assert flow.links.estimates() == {}
