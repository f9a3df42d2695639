"""SimEngine through the EngineAdapter contract: determinism, P/D handoff, leases, abort, events, timing."""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import pytest

from protocol.engine_args import SimArgs
from protocol.types import BlockRemoved, BlockStored, KvEventBatch, SamplingSpec
from worker.engine import EngineRequest, EngineSpec, TokenDelta, build_engine
from worker.engines.sim import KvPullError, SimEngine
from worker.engines.sim import adapter as sim_adapter

GREEDY = SamplingSpec(max_tokens=12, temperature=0.0)
PROMPT = tuple(range(1, 42))
Factory = Callable[..., Awaitable[SimEngine]]


@pytest.fixture
async def make() -> AsyncIterator[Factory]:
    engines: list[SimEngine] = []
    counter = iter(range(10_000))

    async def factory(worker_id: str | None = None, **args: object) -> SimEngine:
        spec = EngineSpec(model="", worker_id=worker_id or f"sim-{next(counter)}", role="both",
                          args=SimArgs.model_validate({"profile": "tiny-fast", **args}))
        engine = build_engine(spec)
        assert isinstance(engine, SimEngine)
        await engine.start()
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        await engine.shutdown()


async def run(engine: SimEngine, request: EngineRequest) -> tuple[list[int], TokenDelta]:
    tokens: list[int] = []
    last = None
    async for delta in engine.generate(request):
        tokens.extend(delta.token_ids)
        last = delta
    assert last is not None and last.finished
    return tokens, last


def req(rid: str, prompt: tuple[int, ...] = PROMPT, sampling: SamplingSpec = GREEDY, **kw: object) -> EngineRequest:
    return EngineRequest(rid, prompt, sampling, **kw)  # type: ignore[arg-type]


async def test_build_and_info(make: Factory) -> None:
    engine = await make("w7", num_blocks=32)
    info = engine.info()
    assert (info.engine_id, info.model, info.block_size, info.num_blocks) == ("w7", "sim-tiny", 4, 32)
    assert info.max_model_len == 128 and info.kv_bytes_per_token == 1024  # capped by the pool


async def test_greedy_output_is_deterministic_across_engines(make: Factory) -> None:
    a, b = await make(), await make()
    out_a, last = await run(a, req("x"))
    out_b, _ = await run(b, req("y"))
    assert out_a == out_b and len(out_a) == 12 and last.finish_reason == "length"
    other, _ = await run(a, req("z", (*PROMPT[:-1], 999)))
    assert other != out_a
    seeded = SamplingSpec(max_tokens=8, temperature=0.8, seed=5)
    assert (await run(a, req("s1", sampling=seeded)))[0] == (await run(b, req("s2", sampling=seeded)))[0]
    unseeded = SamplingSpec(max_tokens=8, temperature=0.8)
    assert (await run(a, req("u1", sampling=unseeded)))[0] != (await run(a, req("u2", sampling=unseeded)))[0]


async def test_stop_tokens_and_eos(make: Factory) -> None:
    engine = await make()
    full, _ = await run(engine, req("a"))
    stop_at = full[4]
    out, last = await run(engine, req("b", sampling=SamplingSpec(max_tokens=12, temperature=0,
                                                                   stop_token_ids=(stop_at,))))
    assert out == full[:full.index(stop_at) + 1] and last.finish_reason == "stop"
    eos_engine = await make(eos_probability=1.0)
    out, last = await run(eos_engine, req("c"))
    assert out == [0] and last.finish_reason == "stop"  # eos_token_id of tiny-fast is 0
    out, last = await run(eos_engine, req("d", sampling=SamplingSpec(max_tokens=3, temperature=0,
                                                                        ignore_eos=True)))
    assert out == [0, 0, 0] and last.finish_reason == "length"


async def test_prefix_cache_hits_are_reported(make: Factory) -> None:
    engine = await make()
    _, first = await run(engine, req("a"))
    _, second = await run(engine, req("b"))
    assert first.num_cached_tokens == 0 and second.num_cached_tokens == 40  # 10 full blocks of 4
    load = engine.load()
    assert (load.prefix_cache_queries, load.prefix_cache_hits) == (82, 40)


async def test_prefill_then_remote_decode_equals_colocated(make: Factory) -> None:
    colo, prefill, decode = await make(), await make("p0"), await make("d0")
    expected, _ = await run(colo, req("c"))
    first, pdone = await run(prefill, req("p", remote_decode=True))
    handoff = pdone.handoff
    assert handoff is not None and pdone.finish_reason == "length" and first == expected[:1]
    assert (handoff.engine_id, handoff.first_token) == ("p0", expected[0])
    assert handoff.request_id.startswith("p@")  # a lease key: the request id itself is free again
    assert handoff.num_blocks == 11 and handoff.prompt_tokens == 41
    assert handoff.lease_deadline > time.time()
    assert prefill.core.held_blocks(handoff.request_id) == handoff.block_ids[0]
    assert prefill.load().kv_usage > 0
    out, last = await run(decode, req("d", handoff=handoff))
    assert out == expected
    assert last.num_cached_tokens == 40
    load = decode.load()
    assert (load.kv_pulls, load.kv_blocks_pulled, load.kv_bytes_pulled) == (1, 11, 11 * 4 * 1024)
    assert load.kv_pull_seconds == pytest.approx(0.0005 + 11 * 4 * 1024 / 1e8)
    # the decode told its (same-process) prefill engine it is done: blocks released, still cached
    assert prefill.core.held_blocks(handoff.request_id) is None and prefill.load().kv_usage == 0.0
    assert prefill.core.blocks.match(PROMPT) == 40


async def test_colocated_worker_prefills_then_decodes_under_the_same_request_id(make: Factory) -> None:
    both, colo = await make("both0"), await make()
    expected, _ = await run(colo, req("c"))
    _, pdone = await run(both, req("r", remote_decode=True))
    out, last = await run(both, req("r", handoff=pdone.handoff))
    assert out == expected and last.num_cached_tokens == 40
    assert both.load().kv_blocks_pulled == 1  # only the partial last block: the full ones were cached
    assert both.load().kv_usage == 0.0  # and the pull released its own lease


async def test_decode_pulls_only_blocks_missing_locally(make: Factory) -> None:
    prefill, decode = await make("p1"), await make("d1")
    await run(decode, req("warm", (*PROMPT[:20], 7)))  # 5 full blocks now cached on the decode side
    _, pdone = await run(prefill, req("p", remote_decode=True))
    assert pdone.handoff is not None
    await run(decode, req("d", handoff=pdone.handoff))
    assert decode.load().kv_blocks_pulled == 11 - 5


async def test_lease_expiry_frees_held_blocks(make: Factory) -> None:
    prefill = await make("p2", lease_timeout_s=0.05)
    _, pdone = await run(prefill, req("p", remote_decode=True))
    assert pdone.handoff is not None and prefill.load().kv_usage > 0
    await asyncio.sleep(0.15)
    assert prefill.core.held_blocks(pdone.handoff.request_id) is None and prefill.load().kv_usage == 0.0
    decode = await make("d2")
    with pytest.raises(KvPullError, match="no longer holds"):
        await run(decode, req("d", handoff=pdone.handoff))
    assert decode.load().kv_usage == 0.0 and decode.load().running == 0


async def test_a_pull_from_another_process_checks_its_lease_and_side_channel(make: Factory) -> None:
    prefill = await make("p3")
    _, pdone = await run(prefill, req("p", remote_decode=True))
    assert pdone.handoff is not None and pdone.handoff.port > 0
    del sim_adapter._PEERS["p3"]  # now it is "another process": only its lease and side channel are known
    decode = await make("d3")
    expired = replace(pdone.handoff, lease_deadline=time.time() - 1)
    with pytest.raises(KvPullError, match="expired") as void:
        await run(decode, req("d", handoff=expired))
    assert void.value.reason == "lease_expired"
    out, _ = await run(decode, req("d2", handoff=pdone.handoff))  # alive and within its lease
    assert len(out) == 12
    await prefill.shutdown()  # its side channel closes, as a dead process's would
    with pytest.raises(KvPullError, match="unreachable") as void:
        await run(decode, req("d4", handoff=pdone.handoff))
    assert void.value.reason == "source_gone"


async def test_abort_of_a_finished_prefill_frees_its_handoff(make: Factory) -> None:
    prefill = await make()
    await run(prefill, req("p", remote_decode=True))
    assert prefill.load().kv_usage > 0
    await prefill.abort("p")  # what the orchestrator sends when the decode side will never pull
    assert prefill.load().kv_usage == 0.0 and prefill.release_handoff("p") is False


async def test_release_handoff_early(make: Factory) -> None:
    prefill = await make()
    await run(prefill, req("p", remote_decode=True))
    assert prefill.release_handoff("p") is True
    assert prefill.release_handoff("p") is False and prefill.load().kv_usage == 0.0
    out, _ = await run(prefill, req("p", remote_decode=True))  # the id is free again
    assert len(out) == 1


async def test_abort_mid_prefill_frees_blocks(make: Factory) -> None:
    engine = await make(max_num_batched_tokens=4, step_base_s=0.005)
    stream = engine.generate(req("long", tuple(range(1, 200))))
    task = asyncio.create_task(run_collect(stream))
    await asyncio.sleep(0.03)
    assert engine.load().running == 1 and engine.load().kv_usage > 0
    await engine.abort("long")
    deltas = await task
    assert deltas[-1].finish_reason == "abort" and deltas[-1].token_ids == ()
    assert engine.load().kv_usage == 0.0 and engine.load().running == 0
    await engine.abort("long")  # unknown now: a no-op


async def run_collect(stream: AsyncIterator[TokenDelta]) -> list[TokenDelta]:
    return [d async for d in stream]


async def test_closing_the_generator_mid_decode_aborts(make: Factory) -> None:
    engine = await make(step_base_s=0.002)
    stream = engine.generate(req("r", sampling=SamplingSpec(max_tokens=200, temperature=0)))
    got = 0
    async for delta in stream:
        got += len(delta.token_ids)
        if got >= 3:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    assert engine.load().running == 0 and engine.load().kv_usage == 0.0
    assert engine.core.scheduler.get("r") is None


async def test_abort_while_pulling(make: Factory) -> None:
    prefill, decode = await make("p4"), await make("d4", link_bandwidth_bytes_per_s=1e5)  # ~0.5 s pull
    _, pdone = await run(prefill, req("p", remote_decode=True))
    task = asyncio.create_task(run_collect(decode.generate(req("d", handoff=pdone.handoff))))
    await asyncio.sleep(0.05)
    assert decode.load().waiting == 1 and decode.load().kv_usage > 0
    await decode.abort("d")
    assert (await task)[-1].finish_reason == "abort"
    assert decode.load().kv_usage == 0.0 and decode.load().kv_pulls == 0


async def test_preemption_keeps_outputs_identical(make: Factory) -> None:
    engine = await make(num_blocks=24, max_num_batched_tokens=64)
    solo = await make()
    prompts = [tuple(range(100 * i + 1, 100 * i + 30)) for i in range(5)]
    sampling = SamplingSpec(max_tokens=20, temperature=0)
    results = await asyncio.gather(*(run(engine, req(f"r{i}", p, sampling)) for i, p in enumerate(prompts)))
    assert engine.core.scheduler.num_preemptions > 0
    for i, p in enumerate(prompts):
        assert results[i][0] == (await run(solo, req(f"s{i}", p, sampling)))[0]
    assert engine.load().kv_usage == 0.0


async def test_kv_events_reflect_stores_and_evictions(make: Factory) -> None:
    engine = await make(num_blocks=16)
    batches: list[KvEventBatch] = []

    async def read() -> None:
        async for batch in engine.kv_events():
            batches.append(batch)

    reader = asyncio.create_task(read())
    await run(engine, req("a", tuple(range(1, 30)), SamplingSpec(max_tokens=2, temperature=0)))
    await run(engine, req("b", tuple(range(500, 540)), SamplingSpec(max_tokens=2, temperature=0)))
    await asyncio.sleep(0.01)
    await engine.shutdown()
    await asyncio.wait_for(reader, 1.0)  # shutdown ends the stream
    assert [b.seq for b in batches] == list(range(len(batches)))
    events = [e for b in batches for e in b.events]
    stored = [h for e in events if isinstance(e, BlockStored) for h in e.block_hashes]
    removed = [h for e in events if isinstance(e, BlockRemoved) for h in e.block_hashes]
    first = next(e for e in events if isinstance(e, BlockStored))
    assert first.parent_block_hash is None and first.token_ids[:4] == (1, 2, 3, 4)
    assert removed and set(removed) <= set(stored[:7])  # a's blocks were evicted to make room for b
    assert set(stored) - set(removed) == set(engine.core.blocks.cached_block_hashes())


async def test_step_durations_follow_the_profile_and_speedup(make: Factory) -> None:
    slow = await make(step_base_s=0.01)
    fast = await make(step_base_s=0.01, speedup=10.0)
    sampling = SamplingSpec(max_tokens=10, temperature=0)
    t0 = time.perf_counter()
    await run(slow, req("a", sampling=sampling))
    slow_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    await run(fast, req("b", sampling=sampling))
    fast_s = time.perf_counter() - t0
    assert 0.095 <= slow_s < 0.2  # 10 steps of >= 10 ms
    assert fast_s < slow_s / 3


async def test_bad_requests_are_rejected(make: Factory) -> None:
    engine = await make()
    with pytest.raises(ValueError, match="max_model_len"):
        await run(engine, req("a", tuple(range(1, 300))))
    with pytest.raises(ValueError, match="out of range"):
        await run(engine, req("b", (5, 1000)))
    busy = engine.generate(req("p", sampling=SamplingSpec(max_tokens=50)))
    await busy.__anext__()
    with pytest.raises(ValueError, match="already in use"):
        await run(engine, req("p"))
    await busy.aclose()  # type: ignore[attr-defined]
    _, pdone = await run(engine, req("p", remote_decode=True))
    assert pdone.handoff is not None
    with pytest.raises(ValueError, match="blocks"):
        await run(engine, req("c", PROMPT[:10], handoff=pdone.handoff))


async def test_shutdown_aborts_streams_and_is_idempotent(make: Factory) -> None:
    engine = await make(step_base_s=0.01)
    task = asyncio.create_task(run_collect(engine.generate(req("r", sampling=SamplingSpec(max_tokens=500)))))
    await asyncio.sleep(0.03)
    await engine.shutdown()
    await engine.shutdown()
    assert (await task)[-1].finish_reason == "abort"
    with pytest.raises(RuntimeError):
        await run(engine, req("x"))


def _loop_wakeups(stats: pstats.Stats) -> int:
    """How many times the event loop woke up while `stats` was recorded (its `_run_once` calls)."""
    raw: dict[tuple[str, int, str], tuple[int, ...]] = stats.stats  # type: ignore[attr-defined]
    return sum(entry[1] for (file, _, name), entry in raw.items()
               if name == "_run_once" and file.endswith("base_events.py"))


async def _idle_second() -> tuple[float, int]:
    """Sleep 1 s on this loop; return this thread's CPU share and the loop's wake-ups meanwhile."""
    profiler = cProfile.Profile()
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    profiler.enable()
    await asyncio.sleep(1.0)
    profiler.disable()
    share = (time.thread_time() - cpu0) / (time.perf_counter() - wall0)
    return share, _loop_wakeups(pstats.Stats(profiler))


async def test_64_idle_engines_cost_no_cpu(make: Factory) -> None:
    # This thread only: the engines live on this event loop, while other tests' background threads
    # (session fixtures' servers) may still be busy in the same process. The floor is measured
    # first on the same loop with no engine: this VM charges each blocking wait a few ms of CPU.
    floor, floor_wakeups = await _idle_second()
    engines = [await make(f"fleet-{i}") for i in range(64)]
    for e in engines[:2]:  # a little traffic first, so leases, pulls and streams have existed
        await run(e, req("warm", sampling=SamplingSpec(max_tokens=3, temperature=0)))
    await asyncio.sleep(0.1)  # let the warm-up's last callbacks run
    share, wakeups = await _idle_second()
    # The wake-ups are the exact measure: one engine polling every 100 ms would wake the loop 10 times a
    # second; 64 of them, 640. The CPU bound only catches a callback that computes for long: thread CPU
    # on this VM also counts waits for the GIL while other threads of the process run (seen in the full
    # suite: 3.2% with no extra wake-up, against 2.0% for the empty loop).
    assert wakeups <= floor_wakeups + 5, f"64 idle engines woke the loop {wakeups} times in 1 s"
    assert share - floor < 0.05, f"64 idle engines used {share:.1%} of a core (empty loop {floor:.1%})"
