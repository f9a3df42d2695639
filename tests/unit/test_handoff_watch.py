"""``until_source_lost``: a decode stream waiting on a handoff ends as a void handoff (source_gone) soon
after the prefill worker holding it is marked down or restarted, and never once tokens flow."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from orchestrator.errors import WorkerError
from orchestrator.handoff_watch import until_source_lost
from orchestrator.pools.pool import WorkerHandle
from protocol.types import EngineInfo, TokenChunk, WorkerDescription


class _Client:
    worker_id = "prefill-0"


def _source() -> WorkerHandle:
    info = EngineInfo(engine_id="prefill-0", model="m", block_size=4, num_blocks=16, max_model_len=64,
                      kv_bytes_per_token=8)
    description = WorkerDescription("prefill-0", "prefill", "127.0.0.1", "sim", info)
    return WorkerHandle(client=_Client(), description=description)  # type: ignore[arg-type]


async def _stream(first_after_s: float, tokens: int = 3,
                  closed: list[bool] | None = None) -> AsyncIterator[TokenChunk]:
    try:
        await asyncio.sleep(first_after_s)
        for i in range(tokens):
            yield TokenChunk(token_ids=(i,), finished=i == tokens - 1)
            await asyncio.sleep(0.05)
    finally:
        if closed is not None:
            closed.append(True)


async def _drain(chunks: AsyncIterator[TokenChunk]) -> list[TokenChunk]:
    return [chunk async for chunk in chunks]


@pytest.mark.parametrize("how", ["down", "restarted"])
def test_a_lost_source_ends_the_wait_for_the_first_token(how: str) -> None:
    async def run() -> None:
        source, closed = _source(), []
        watched = until_source_lost(_stream(60.0, closed=closed), source, "decode-0", poll_s=0.02)

        async def lose() -> None:
            await asyncio.sleep(0.1)
            if how == "down":
                source.healthy = False
            else:
                source.client = _Client()  # type: ignore[assignment]

        started = time.monotonic()
        asyncio.get_running_loop().create_task(lose())
        with pytest.raises(WorkerError) as failed:
            await _drain(watched)
        assert failed.value.void_reason == "source_gone" and failed.value.worker_id == "decode-0"
        assert time.monotonic() - started < 1.0
        assert closed  # the decode stream itself was closed (the flow then aborts it on its worker)

    asyncio.run(run())


def test_once_tokens_flow_the_source_no_longer_matters() -> None:
    async def run() -> None:
        source = _source()

        async def lose() -> None:
            await asyncio.sleep(0.12)
            source.healthy = False

        asyncio.get_running_loop().create_task(lose())
        chunks = await _drain(until_source_lost(_stream(0.05, tokens=5), source, "decode-0", poll_s=0.02))
        assert [c.token_ids for c in chunks] == [(0,), (1,), (2,), (3,), (4,)]

    asyncio.run(run())


def test_without_a_handoff_chunks_pass_through() -> None:
    chunks = asyncio.run(_drain(until_source_lost(_stream(0.0), None, "decode-0")))
    assert len(chunks) == 3 and chunks[-1].finished
