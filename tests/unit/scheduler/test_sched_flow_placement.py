"""``RequestFlow.place`` over in-memory pools (fake clients, no I/O): where local and colocated placements
go, and their queued prefill work (``Seat``): added when placed, dropped at the first token, and given back
exactly once on every way a request ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.config import ServerConfig
from orchestrator.errors import WorkerError
from orchestrator.flow import RequestFlow
from orchestrator.metrics import Metrics
from orchestrator.placement import FlowRequest, Placement
from orchestrator.pools.pool import WorkerHandle, WorkerPool
from orchestrator.scheduler.disagg_policy import DisaggPolicy
from orchestrator.scheduler.plugin import PluginEnv
from orchestrator.scheduler.prefix_index import PrefixIndex
from orchestrator.scheduler.profiles import build_pipeline, preset
from orchestrator.scheduler.router import Router
from protocol.types import BlockStored, EngineLoad, GenerateCall, KvEventBatch, KVHandoff, SamplingSpec, TokenChunk

BS = 4
PROMPT = tuple(range(500, 756))  # 256 tokens, 64 blocks


@dataclass
class FakeClient:
    """A worker that answers at once. ``chunks``: what each Generate call streams, in turn (a
    ``WorkerError`` in the list is raised there)."""

    worker_id: str
    chunks: list[list[TokenChunk | WorkerError]] = field(default_factory=list)
    prefills: list[str] = field(default_factory=list)
    aborts: list[str] = field(default_factory=list)
    generates: list[GenerateCall] = field(default_factory=list)

    async def prefill(self, call: Any, timeout_s: float) -> KVHandoff:
        self.prefills.append(call.request_id)
        return KVHandoff(engine_id=self.worker_id, block_ids=((1,),), host="h", port=1, request_id=call.request_id,
                         first_token=7, prompt_tokens=len(call.prompt_token_ids))

    async def generate(self, call: GenerateCall, first_s: float, inter_s: float,
                       deadline_s: float | None = None) -> AsyncIterator[TokenChunk]:
        self.generates.append(call)
        script = self.chunks.pop(0) if self.chunks else [TokenChunk((7,), False), TokenChunk((8,), True, "length")]
        for item in script:
            if isinstance(item, WorkerError):
                raise item
            yield item

    async def abort(self, request_id: str) -> bool:
        self.aborts.append(request_id)
        return True


def handle(worker_id: str, running: int = 0, engine_kind: str = "sim") -> WorkerHandle:
    h = WorkerHandle(client=FakeClient(worker_id),
                     description=SimpleNamespace(host="h", engine_kind=engine_kind))  # type: ignore[arg-type]
    h.load = EngineLoad(running=running)
    return h


def make_flow(prefill: Sequence[WorkerHandle] | None, decode: Sequence[WorkerHandle], *,
              colocated_profile: str = "kv_aware", min_remote_tokens: int = 64,
              on_pull_failure: str = "retry") -> tuple[RequestFlow, PrefixIndex]:
    index = PrefixIndex("m", BS)
    env = PluginEnv(seed=3)
    router = Router(model="m", block_size=BS, index=index, prefill=build_pipeline(preset(colocated_profile), env),
                    decode=build_pipeline(preset("decode"), env),
                    disagg=DisaggPolicy(min_remote_tokens=min_remote_tokens))
    flow = RequestFlow(router=router, prefill=WorkerPool("prefill", list(prefill), 8) if prefill is not None else None,
                       decode=WorkerPool("decode", list(decode), 8), metrics=Metrics(), server=ServerConfig(),
                       prefill_policy=colocated_profile, decode_policy="decode", kv_bytes_per_token=64,
                       on_pull_failure=on_pull_failure)
    return flow, index


def hold(index: PrefixIndex, worker: str, tokens: Sequence[int]) -> None:
    hashes = tuple(hash((worker, i)) & (2**62 - 1) for i in range(len(tokens) // BS))
    index.apply(worker, KvEventBatch(0, 0.0, (BlockStored(hashes, None, tuple(tokens), BS),)))


def req(rid: str = "r", prompt: tuple[int, ...] = PROMPT) -> FlowRequest:
    return FlowRequest(rid, prompt, SamplingSpec(max_tokens=2))


def queued(*handles: WorkerHandle) -> list[tuple[int, int]]:
    return [(h.queued_prefill_tokens, h.in_flight) for h in handles]


async def drain(flow: RequestFlow, r: FlowRequest, placement: Placement) -> list[TokenChunk]:
    return [c async for c in flow.stream(r, placement)]


async def test_colocated_kv_aware_sees_queued_prefill_work() -> None:
    """Two requests in a row, equal (empty) caches: the first one's prompt work queued on ``a`` sends the
    second to ``b``, although ``b`` is busier decoding (by load alone, ``a`` would take both)."""
    a, b = handle("a"), handle("b", running=2)
    flow, _ = make_flow(None, [a, b])
    first = await flow.place(req("r1"))
    assert first.decode_worker == "a" and queued(a, b) == [(256, 1), (0, 0)]
    second = await flow.place(req("r2"))
    assert second.decode_worker == "b" and queued(a, b) == [(256, 1), (256, 1)]
    await drain(flow, req("r1"), first)
    await flow.release(req("r2"), second)
    assert queued(a, b) == [(0, 0), (0, 0)]


async def test_colocated_queue_counts_only_the_uncached_part() -> None:
    a, b = handle("a"), handle("b")
    flow, index = make_flow(None, [a, b])
    hold(index, "b", PROMPT[:200])
    placement = await flow.place(req())
    assert placement.decode_worker == "b" and placement.predicted_cached_tokens == 200
    assert queued(b) == [(56, 1)]
    await flow.release(req(), placement)
    assert queued(a, b) == [(0, 0), (0, 0)]


async def test_a_prompt_cached_on_a_decode_worker_is_prefilled_locally_there() -> None:
    p0, d0, d1 = handle("p0"), handle("d0"), handle("d1")
    flow, index = make_flow([p0], [d0, d1])
    hold(index, "d1", PROMPT[:240])
    placement = await flow.place(req())
    assert (placement.decode_worker, placement.prefill_worker, placement.route_reason) == ("d1", None,
                                                                                          "short_prompt")
    assert placement.predicted_cached_tokens == 240 and queued(d1) == [(16, 1)]
    assert p0.client.prefills == []  # type: ignore[attr-defined]
    await drain(flow, req(), placement)
    assert queued(p0, d0, d1) == [(0, 0)] * 3


async def test_a_prompt_cached_on_a_prefill_worker_is_not_recomputed_on_a_decode_worker() -> None:
    p0, d0, d1 = handle("p0"), handle("d0"), handle("d1")
    flow, index = make_flow([p0], [d0, d1])
    hold(index, "p0", PROMPT[:240])  # 16 tokens left on p0, 256 on either decode worker
    placement = await flow.place(req())
    assert placement.prefill_worker == "p0" and placement.route_reason != "short_prompt"
    assert p0.client.prefills == ["r-p"]  # type: ignore[attr-defined]
    assert queued(p0) == [(0, 0)] and queued(d0)[0][0] == queued(d1)[0][0] == 0  # no prompt work on decode
    await drain(flow, req(), placement)
    assert queued(p0, d0, d1) == [(0, 0)] * 3


ENDINGS = ["finished", "closed_before_first_token", "closed_after_first_token", "released_unstreamed",
           "failed_before_first_token"]


@pytest.mark.parametrize("ending", ENDINGS)
async def test_every_seat_gives_its_prefill_tokens_back_once(ending: str) -> None:
    a = handle("a")
    if ending == "failed_before_first_token":
        a.client.chunks = [[TokenChunk((), False), WorkerError("a", "boom")]]  # type: ignore[attr-defined]
    else:
        a.client.chunks = [[TokenChunk((), False), TokenChunk((7,), False), TokenChunk((8,), True, "length")]]  # type: ignore[attr-defined]
    flow, _ = make_flow(None, [a])
    placement = await flow.place(req())
    assert queued(a) == [(256, 1)]
    if ending == "released_unstreamed":
        await flow.release(req(), placement)
    else:
        stream = flow.stream(req(), placement)
        assert (await stream.__anext__()).token_ids == ()  # streamed, no token yet: still queued
        assert queued(a) == [(256, 1)]
        if ending == "failed_before_first_token":
            with pytest.raises(WorkerError):
                await stream.__anext__()
        elif ending == "closed_before_first_token":
            await stream.aclose()
        else:
            assert (await stream.__anext__()).token_ids == (7,)
            assert queued(a) == [(0, 1)]  # first token out: the prompt work is done, the seat is not
            if ending == "finished":
                assert [c.finished async for c in stream] == [True]
            else:
                await stream.aclose()
    await flow.release(req(), placement)  # idempotent whatever happened before
    assert queued(a) == [(0, 0)]


async def test_a_recompute_queues_the_prompt_on_its_decode_worker() -> None:
    p0, d0 = handle("p0"), handle("d0")
    void = WorkerError("d0", "lease gone", void_reason="lease_expired")
    d0.client.chunks = [[void], [TokenChunk((), False), TokenChunk((7,), True, "length")]]  # type: ignore[attr-defined]
    flow, _ = make_flow([p0], [d0], min_remote_tokens=0, on_pull_failure="recompute")
    placement = await flow.place(req())
    assert placement.prefill_worker == "p0" and queued(d0) == [(0, 1)]
    stream = flow.stream(req(), placement)
    assert (await stream.__anext__()).token_ids == ()  # the recompute's first chunk: prompt work queued
    assert queued(d0) == [(256, 1)]
    assert [c.token_ids async for c in stream] == [(7,)]
    assert queued(p0, d0) == [(0, 0), (0, 0)]


@pytest.mark.parametrize(("engine_kind", "aborted", "read"), [("sim", True, False), ("vllm", True, True),
                                                              ("other", True, True)])
async def test_an_unread_handoff_is_freed_by_the_prefill_engine_s_rule(engine_kind: str, aborted: bool,
                                                                       read: bool) -> None:
    """Released before its decode started: a sim prefill frees its blocks on abort; vLLM's frees them
    only once a decode engine has read them, so a decode worker reads the handoff for one dropped token."""
    p0, d0, d1 = handle("p0", engine_kind=engine_kind), handle("d0"), handle("d1")
    flow, _ = make_flow([p0], [d0, d1], min_remote_tokens=0)
    placement = await flow.place(req())
    assert placement.handoff is not None
    await flow.release(req(), placement)
    await asyncio.sleep(0.05)  # the read runs in the background
    await flow.close()
    assert (p0.client.aborts == ["r-p"]) is aborted  # type: ignore[attr-defined]
    reads = [c for h in (d0, d1) for c in h.client.generates]  # type: ignore[attr-defined]
    if read:
        (call,) = reads
        assert call.handoff == placement.handoff and call.sampling.max_tokens == 1
        assert call.request_id == "r-release" and call.prompt_token_ids == PROMPT
        assert placement.decode_worker in (d0.worker_id, d1.worker_id)
        assert call in d0.client.generates + d1.client.generates  # type: ignore[attr-defined]
    else:
        assert reads == []
    await flow.release(req(), placement)  # idempotent: nothing is freed twice
    assert len(p0.client.aborts) == 1  # type: ignore[attr-defined]


async def test_the_release_read_goes_to_another_decode_worker_when_the_chosen_one_left() -> None:
    p0, d0, d1 = handle("p0", engine_kind="vllm"), handle("d0"), handle("d1")
    flow, _ = make_flow([p0], [d0, d1], min_remote_tokens=0)
    placement = await flow.place(req())
    chosen, other = (d0, d1) if placement.decode_worker == "d0" else (d1, d0)
    chosen.draining = True
    await flow.release(req(), placement)
    await asyncio.sleep(0.05)
    await flow.close()
    assert chosen.client.generates == [] and len(other.client.generates) == 1  # type: ignore[attr-defined]


async def test_a_release_read_that_hangs_ends_at_the_first_token_timeout() -> None:
    from orchestrator.handoff_release import HandoffReleaser

    class Hanging(FakeClient):
        async def generate(self, call: GenerateCall, first_s: float, inter_s: float,
                           deadline_s: float | None = None) -> AsyncIterator[TokenChunk]:
            self.generates.append(call)
            await asyncio.sleep(3600)
            yield TokenChunk((), True)

    p0, d0 = handle("p0", engine_kind="vllm"), handle("d0")
    d0.client = Hanging("d0")
    flow, _ = make_flow([p0], [d0], min_remote_tokens=0)
    placement = await flow.place(req())
    releaser = HandoffReleaser(flow._prefill, flow._decode, Metrics(), ServerConfig(first_token_timeout_s=0.1))
    await releaser.release(req(), placement, "r-p")
    (task,) = releaser._reads
    await asyncio.wait_for(task, timeout=5)  # ends by itself, well before the hour
    assert d0.client.generates and not releaser._reads
