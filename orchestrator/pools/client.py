"""A typed gRPC client for one worker. Converts at the edge; callers see dataclasses only.

Every call takes a timeout; a worker that fails or stalls raises ``WorkerError`` (with the worker id
and a reason), never hangs. ``generate`` applies a first-token and an inter-token timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from orchestrator.errors import WorkerError
from protocol import convert
from protocol import worker_pb2_grpc as pb_grpc
from protocol.types import (
    VOID_REASON_KEY,
    GenerateCall,
    KvEventBatch,
    KVHandoff,
    PrefillCall,
    TokenChunk,
    WorkerDescription,
    WorkerLoad,
)


def _describe(worker_id: str, err: grpc.aio.AioRpcError) -> WorkerError:
    code = err.code()
    retryable = code not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
    void_reason = None
    if code == grpc.StatusCode.ABORTED:
        void_reason = next((str(v) for k, v in (err.trailing_metadata() or ()) if k == VOID_REASON_KEY), None)
    return WorkerError(worker_id, f"{code.name}: {err.details()}", retryable,
                       timed_out=code == grpc.StatusCode.DEADLINE_EXCEEDED, void_reason=void_reason,
                       rejected=code == grpc.StatusCode.INVALID_ARGUMENT,
                       unreachable=code == grpc.StatusCode.UNAVAILABLE)


class WorkerClient:
    """Owns one gRPC channel; ``close`` releases it."""

    def __init__(self, worker_id: str, address: str) -> None:
        self.worker_id = worker_id
        self.address = address
        self._channel = grpc.aio.insecure_channel(address, options=[
            ("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)])
        self._stub = pb_grpc.WorkerStub(self._channel)

    async def info(self, timeout_s: float = 10.0) -> WorkerDescription:
        try:
            return convert.info_from_pb(await self._stub.GetInfo(convert.info_request_pb(), timeout=timeout_s))
        except grpc.aio.AioRpcError as err:
            raise _describe(self.worker_id, err) from None

    async def load(self, timeout_s: float = 2.0) -> WorkerLoad:
        try:
            return convert.load_from_pb(await self._stub.GetLoad(convert.load_request_pb(), timeout=timeout_s))
        except grpc.aio.AioRpcError as err:
            raise _describe(self.worker_id, err) from None

    async def prefill(self, call: PrefillCall, timeout_s: float) -> KVHandoff:
        """Run ``call`` on the worker; the handoff of the KV blocks it now holds for a remote decode."""
        try:
            reply = await self._stub.Prefill(convert.prefill_call_to_pb(call), timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise WorkerError(self.worker_id, f"prefill timed out after {timeout_s:g}s", timed_out=True) from None
            raise _describe(self.worker_id, err) from None
        return convert.prefill_response_from_pb(reply)

    async def generate(self, call: GenerateCall, first_token_timeout_s: float, inter_token_timeout_s: float,
                       deadline_s: float | None = None) -> AsyncIterator[TokenChunk]:
        """Stream chunks until the finished one. Closing the iterator cancels the RPC, which aborts the
        request on the worker. A stream that ends unfinished, or is silent for longer than its timeout
        (first token, then between chunks), raises ``WorkerError``. ``deadline_s`` is the RPC's gRPC
        deadline: the worker itself cancels (and so aborts) the request past it, whatever happens here."""
        stream = self._stub.Generate(convert.generate_call_to_pb(call), timeout=deadline_s)
        timeout = first_token_timeout_s
        try:
            while True:
                try:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
                    # arrives just as the read completes, and the request would then run on un-aborted.
                    async with asyncio.timeout(timeout):
                        reply = await stream.read()
                except TimeoutError:
                    raise WorkerError(self.worker_id, f"no output for {timeout:g}s", timed_out=True) from None
                if reply is grpc.aio.EOF:
                    raise WorkerError(self.worker_id, "stream ended before the request finished")
                chunk = convert.token_chunk_from_pb(reply)
                yield chunk
                if chunk.finished:
                    return
                timeout = inter_token_timeout_s
        except grpc.aio.AioRpcError as err:
            raise _describe(self.worker_id, err) from None
        finally:
            stream.cancel()

    async def abort(self, request_id: str, timeout_s: float = 5.0) -> bool:
        """Abort ``request_id`` on the worker; True if it was running there. Failures count as False."""
        try:
            reply = await self._stub.Abort(convert.abort_request_to_pb(request_id), timeout=timeout_s)
        except grpc.aio.AioRpcError:
            return False
        return convert.abort_response_from_pb(reply)

    async def kv_events(self) -> AsyncIterator[KvEventBatch]:
        """The worker's KV event stream until it ends or fails (raises ``WorkerError``)."""
        call = self._stub.StreamKvEvents(convert.events_request_pb())
        try:
            async for msg in call:
                yield convert.events_from_pb(msg)
        except grpc.aio.AioRpcError as err:
            raise _describe(self.worker_id, err) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        await self._channel.close()
