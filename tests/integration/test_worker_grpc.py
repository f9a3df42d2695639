"""The worker runtime's gRPC contract, in process: ``WorkerService`` over simulated engines, called
through the orchestrator's ``WorkerClient`` (info, load, prefill handoff, decode pulling it, abort, role
checks, request errors, KV events)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest

from orchestrator.errors import WorkerError
from orchestrator.pools.client import WorkerClient
from protocol import worker_pb2_grpc as pb_grpc
from protocol.engine_args import SimArgs
from protocol.types import (
    WIRE_VERSION,
    BlockStored,
    GenerateCall,
    KvEventBatch,
    KVHandoff,
    PrefillCall,
    SamplingSpec,
    TokenChunk,
)
from worker.engine import EngineSpec, build_engine
from worker.engines.sim import SimEngine
from worker.event_fanout import EventFanout
from worker.roles import load_role
from worker.server import WorkerService

pytestmark = pytest.mark.timeout(30)

GREEDY = SamplingSpec(max_tokens=6, temperature=0.0)
PROMPT = tuple(range(10, 50))  # 40 tokens = 10 blocks of 4
Start = Callable[..., Awaitable[WorkerClient]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """``await start(worker_id, role, **sim_args)``: a sim engine (``tiny-fast``, speedup 20 unless
    ``sim_args`` say otherwise) served by WorkerService on 127.0.0.1:0."""
    engines: list[SimEngine] = []
    fanouts: list[EventFanout] = []
    servers: list[grpc.aio.Server] = []
    clients: list[WorkerClient] = []

    async def make(worker_id: str, role: str, **sim_args: float) -> WorkerClient:
        args = SimArgs(profile="tiny-fast", **{"speedup": 20.0, **sim_args})  # type: ignore[arg-type]
        engine = build_engine(EngineSpec(model="", worker_id=worker_id, role=role, args=args))
        assert isinstance(engine, SimEngine)
        await engine.start()
        engines.append(engine)
        fanout = EventFanout(engine)
        fanout.start()
        fanouts.append(fanout)
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        service = WorkerService(worker_id, load_role(role), "127.0.0.1", "sim", engine, fanout)
        pb_grpc.add_WorkerServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        client = WorkerClient(worker_id, f"127.0.0.1:{port}")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
    for server in servers:
        await server.stop(grace=0)
    for fanout in fanouts:
        await fanout.close()
    for engine in engines:
        await engine.shutdown()


async def drain(stream: AsyncIterator[TokenChunk]) -> list[TokenChunk]:
    return [chunk async for chunk in stream]


def pcall(request_id: str, prompt: tuple[int, ...] = PROMPT, sampling: SamplingSpec = GREEDY) -> PrefillCall:
    return PrefillCall(request_id=request_id, prompt_token_ids=prompt, sampling=sampling)


def gcall(request_id: str, prompt: tuple[int, ...] = PROMPT, sampling: SamplingSpec = GREEDY,
          handoff: KVHandoff | None = None) -> GenerateCall:
    return GenerateCall(request_id=request_id, prompt_token_ids=prompt, sampling=sampling, handoff=handoff)


async def test_info_and_load(start: Start) -> None:
    client = await start("prefill-0", "prefill")
    info = await client.info()
    assert (info.worker_id, info.role, info.host, info.engine_kind) == ("prefill-0", "prefill", "127.0.0.1", "sim")
    assert info.wire_version == WIRE_VERSION
    assert info.engine.engine_id == "prefill-0" and info.engine.block_size == 4
    load = await client.load()
    assert load.in_flight == 0 and load.engine.running == 0


async def test_prefill_handoff_then_decode_pulls_it(start: Start) -> None:
    prefill = await start("prefill-0", "prefill")
    decode = await start("decode-0", "decode")
    handoff = await prefill.prefill(pcall("r1-p"), timeout_s=10)
    assert handoff.engine_id == "prefill-0" and handoff.prompt_tokens == len(PROMPT)
    assert handoff.num_blocks == len(PROMPT) // 4 and handoff.first_token >= 0
    chunks = await drain(decode.generate(gcall("r1-d", handoff=handoff), 10, 10))
    tokens = [t for c in chunks for t in c.token_ids]
    assert len(tokens) == GREEDY.max_tokens and tokens[0] == handoff.first_token
    assert chunks[-1].finished and chunks[-1].finish_reason == "length"
    assert chunks[-1].num_cached_tokens >= handoff.num_blocks * 4 - 4
    # The same prompt decoded locally (no handoff) gives the same greedy answer.
    local = await drain(decode.generate(gcall("r2-d"), 10, 10))
    assert [t for c in local for t in c.token_ids] == tokens


async def test_roles_are_enforced_and_not_retryable(start: Start) -> None:
    prefill = await start("prefill-0", "prefill")
    decode = await start("decode-0", "decode")
    with pytest.raises(WorkerError) as info:
        await decode.prefill(pcall("x-p"), timeout_s=5)
    assert not info.value.retryable and "FAILED_PRECONDITION" in str(info.value)
    with pytest.raises(WorkerError) as info:
        await drain(prefill.generate(gcall("x-d"), 5, 5))
    assert not info.value.retryable and "does not decode" in str(info.value)


async def test_both_role_prefills_and_decodes(start: Start) -> None:
    both = await start("both-0", "both")
    assert (await both.info()).role == "both"
    handoff = await both.prefill(pcall("b-p"), timeout_s=5)
    chunks = await drain(both.generate(gcall("b-d", handoff=handoff), 5, 5))
    assert chunks[-1].finished


@pytest.mark.parametrize(("prompt", "message"), [((), "empty"), ((5, 10_000_000), "out of range")])
async def test_bad_prefill_requests_are_invalid_argument(start: Start, prompt: tuple[int, ...], message: str) -> None:
    prefill = await start("prefill-0", "prefill")
    with pytest.raises(WorkerError) as info:
        await prefill.prefill(pcall("bad-p", prompt), timeout_s=5)
    assert not info.value.retryable and "INVALID_ARGUMENT" in str(info.value) and message in str(info.value)


async def test_bad_generate_requests_are_invalid_argument(start: Start) -> None:
    decode = await start("decode-0", "decode")
    with pytest.raises(WorkerError) as info:
        await drain(decode.generate(gcall("bad-d", (5, 10_000_000)), 5, 5))
    assert not info.value.retryable and "INVALID_ARGUMENT" in str(info.value)


async def assert_idle_soon(worker: WorkerClient, within_s: float = 2.0) -> None:
    """The worker reports nothing in flight and nothing running within ``within_s``."""
    for _ in range(int(within_s / 0.02)):
        load = await worker.load()
        if load.in_flight == 0 and load.engine.running == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"still busy after {within_s}s: {load}")


async def test_closing_a_stream_early_frees_the_request(start: Start) -> None:
    decode = await start("decode-0", "decode")
    long = SamplingSpec(max_tokens=200, temperature=0.0, ignore_eos=True)
    stream = decode.generate(gcall("long-d", sampling=long), 5, 5)
    first = await anext(stream)
    assert first.token_ids and not first.finished
    await stream.aclose()  # type: ignore[attr-defined]
    await assert_idle_soon(decode)
    assert await decode.abort("long-d") is False  # already gone: abort of an unknown id is a no-op


async def test_a_decode_past_its_deadline_is_aborted_by_the_worker_itself(start: Start) -> None:
    decode = await start("decode-0", "decode", speedup=0.05)  # 20 ms steps: 200 tokens take 4 s
    long = SamplingSpec(max_tokens=200, temperature=0.0, ignore_eos=True)
    stream = decode.generate(gcall("slow-d", sampling=long), 5, 5, deadline_s=0.5)
    first = await anext(stream)
    assert first.token_ids and not first.finished
    # The caller neither reads on nor closes the stream (a lost abort): the worker ends it at the deadline.
    await asyncio.sleep(0.5)
    await assert_idle_soon(decode)
    with pytest.raises(WorkerError, match="DEADLINE_EXCEEDED"):
        await drain(stream)


async def test_kv_events_stream_after_a_prefill(start: Start) -> None:
    prefill = await start("prefill-0", "prefill")
    received: list[KvEventBatch] = []

    async def listen() -> None:
        async for batch in prefill.kv_events():
            received.append(batch)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.1)  # subscribed before the prefill
    await prefill.prefill(pcall("e-p"), timeout_s=5)
    for _ in range(100):
        if any(isinstance(e, BlockStored) for b in received for e in b.events):
            break
        await asyncio.sleep(0.02)
    listener.cancel()
    stored = [e for b in received for e in b.events if isinstance(e, BlockStored)]
    assert stored and sum(len(e.block_hashes) for e in stored) == len(PROMPT) // 4
    assert tuple(t for e in stored for t in e.token_ids) == PROMPT
    seqs = [b.seq for b in received]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
