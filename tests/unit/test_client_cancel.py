"""``WorkerClient.generate`` never swallows a cancellation: a client that goes away cancels the request's
task, which must reach the worker (as an Abort) even when a chunk arrives at the same moment. On Python
3.11, ``asyncio.wait_for`` returned the chunk and dropped the cancel when both happened in one loop turn,
and the decode ran on un-aborted."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.pools.client import WorkerClient
from protocol import convert
from protocol.types import GenerateCall, SamplingSpec, TokenChunk

CALL = GenerateCall(request_id="r-d", prompt_token_ids=(1, 2, 3), sampling=SamplingSpec(max_tokens=8))


class FakeStream:
    """A Generate call whose reads the test completes by hand, one future per read."""

    def __init__(self) -> None:
        self.reads: list[asyncio.Future[Any]] = []
        self.cancelled = False

    async def read(self) -> Any:
        self.reads.append(asyncio.get_running_loop().create_future())
        return await self.reads[-1]

    def cancel(self) -> None:
        self.cancelled = True


@pytest.mark.parametrize("turns", range(6))
async def test_a_cancel_racing_a_chunk_is_not_swallowed(turns: int) -> None:
    client = WorkerClient("decode-0", "127.0.0.1:1")  # never connects: the stub is replaced
    stream = FakeStream()
    client._stub = SimpleNamespace(Generate=lambda msg, timeout=None: stream)  # type: ignore[assignment]
    chunk = convert.token_chunk_to_pb(TokenChunk(token_ids=(7,), finished=False))

    async def consume() -> None:
        async for _ in client.generate(CALL, 30.0, 30.0):
            pass

    task = asyncio.create_task(consume())
    while not stream.reads:
        assert not task.done(), task  # generate failed before its first read
        await asyncio.sleep(0)
    stream.reads[0].set_result(chunk)
    for _ in range(turns):  # the cancel lands 0..5 loop turns after the chunk
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait({task}, timeout=2)
    try:
        assert task.done() and task.cancelled(), "the cancellation was swallowed: generate went on reading"
        assert stream.cancelled
    finally:
        task.cancel()
        await client.close()
