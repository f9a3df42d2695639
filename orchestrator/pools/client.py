"""A typed gRPC client for one worker. Converts at the edge; callers see dataclasses only.

Every call takes a timeout; a worker that fails or stalls raises ``WorkerError`` (with the worker id
and a reason), never hangs. ``generate`` applies a first-token and an inter-token timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from protocol import convert
from protocol import worker_pb2 as pb
from protocol import worker_pb2_grpc as pb_grpc
from protocol.types import KvEventBatch, SamplingSpec
from transfer.handoff import KVHandoff


class WorkerError(RuntimeError):
    """A worker call failed or timed out. ``retryable`` is False for errors the request caused;
    ``timed_out`` is True when the worker did not answer in time (HTTP 504 rather than 502)."""

    def __init__(self, worker_id: str, message: str, retryable: bool = True, timed_out: bool = False) -> None:
        self.worker_id = worker_id
        self.retryable = retryable
        self.timed_out = timed_out
        super().__init__(f"worker {worker_id}: {message}")


@dataclass(frozen=True)
class Chunk:
    token_ids: tuple[int, ...]
    finished: bool
    finish_reason: str | None
    num_cached_tokens: int


def _describe(worker_id: str, err: grpc.aio.AioRpcError) -> WorkerError:
    code = err.code()
    retryable = code not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
    return WorkerError(worker_id, f"{code.name}: {err.details()}", retryable,
                       timed_out=code == grpc.StatusCode.DEADLINE_EXCEEDED)


class WorkerClient:
    """Owns one gRPC channel; ``close`` releases it."""

    def __init__(self, worker_id: str, address: str) -> None:
        self.worker_id = worker_id
        self.address = address
        self._channel = grpc.aio.insecure_channel(address, options=[
            ("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)])
        self._stub = pb_grpc.WorkerStub(self._channel)

    async def info(self, timeout_s: float = 10.0) -> convert.WorkerDescription:
        try:
            return convert.info_from_pb(await self._stub.GetInfo(pb.InfoRequest(), timeout=timeout_s))
        except grpc.aio.AioRpcError as err:
            raise _describe(self.worker_id, err) from None

    async def load(self, timeout_s: float = 2.0) -> convert.WorkerLoad:
        try:
            return convert.load_from_pb(await self._stub.GetLoad(pb.LoadRequest(), timeout=timeout_s))
        except grpc.aio.AioRpcError as err:
            raise _describe(self.worker_id, err) from None

    async def prefill(self, request_id: str, prompt: tuple[int, ...], sampling: SamplingSpec,
                      cache_salt: str | None, timeout_s: float) -> KVHandoff:
        msg = pb.PrefillRequest(request_id=request_id, prompt_token_ids=list(prompt),
                                sampling=convert.sampling_to_pb(sampling), cache_salt=cache_salt or "")
        try:
            reply = await self._stub.Prefill(msg, timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise WorkerError(self.worker_id, f"prefill timed out after {timeout_s:g}s", timed_out=True) from None
            raise _describe(self.worker_id, err) from None
        return convert.handoff_from_pb(reply.handoff)

    async def generate(self, request_id: str, prompt: tuple[int, ...], sampling: SamplingSpec,
                       handoff: KVHandoff | None, cache_salt: str | None, first_token_timeout_s: float,
                       inter_token_timeout_s: float) -> AsyncIterator[Chunk]:
        """Stream chunks. Closing the iterator cancels the RPC, which aborts the request on the worker."""
        msg = pb.GenerateRequest(request_id=request_id, prompt_token_ids=list(prompt),
                                 sampling=convert.sampling_to_pb(sampling), cache_salt=cache_salt or "")
        if handoff is not None:
            msg.handoff.CopyFrom(convert.handoff_to_pb(handoff))
        call = self._stub.Generate(msg)
        timeout = first_token_timeout_s
        try:
            while True:
                try:
                    reply = await asyncio.wait_for(call.read(), timeout)
                except asyncio.TimeoutError:
                    raise WorkerError(self.worker_id, f"no output for {timeout:g}s", timed_out=True) from None
                if reply is grpc.aio.EOF:
                    raise WorkerError(self.worker_id, "stream ended before the request finished")
                chunk = Chunk(tuple(reply.token_ids), reply.finished, reply.finish_reason or None,
                              reply.num_cached_tokens)
                yield chunk
                if chunk.finished:
                    return
                timeout = inter_token_timeout_s
        except grpc.aio.AioRpcError as err:
            raise _describe(self.worker_id, err) from None
        finally:
            call.cancel()

    async def abort(self, request_id: str, timeout_s: float = 5.0) -> bool:
        try:
            reply = await self._stub.Abort(pb.AbortRequest(request_id=request_id), timeout=timeout_s)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.was_running)

    async def kv_events(self) -> AsyncIterator[KvEventBatch]:
        """The worker's KV event stream until it ends or fails (raises ``WorkerError``)."""
        call = self._stub.StreamKvEvents(pb.EventsRequest())
        try:
            async for msg in call:
                yield convert.events_from_pb(msg)
        except grpc.aio.AioRpcError as err:
            raise _describe(self.worker_id, err) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        await self._channel.close()
