"""The worker's gRPC service: the same runtime for every role, dispatching Prefill and Generate to the
role's handlers (``worker.roles``).

Owns nothing but bookkeeping; the engine belongs to ``worker.main``. Messages are converted at this edge
(``protocol.convert``); handlers see typed calls only. A duty the role does not take is refused with
FAILED_PRECONDITION; a request the engine rejects (``ValueError``) with INVALID_ARGUMENT; a handler that
ends without its result (``DutyFailed``) with INTERNAL; a decode whose handoff cannot be read
(``HandoffVoid``) with ABORTED, its reason in the trailing metadata (``VOID_REASON_KEY``). A client that
cancels a ``Generate`` stream (disconnect, deadline) cancels the handler, which closes the role's
iterator and so aborts the request in the engine.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import NoReturn

import grpc

from protocol import convert
from protocol import worker_pb2 as pb
from protocol import worker_pb2_grpc as pb_grpc
from protocol.types import VOID_REASON_KEY, WorkerDescription, WorkerLoad
from worker.engine import EngineAdapter, HandoffVoid
from worker.event_fanout import EventFanout
from worker.roles import DutyFailed, Role

log = logging.getLogger(__name__)


class WorkerService(pb_grpc.WorkerServicer):
    def __init__(self, worker_id: str, role: Role, host: str, engine_kind: str, engine: EngineAdapter,
                 fanout: EventFanout) -> None:
        self._id = worker_id
        self._role = role
        self._host = host
        self._kind = engine_kind
        self._engine = engine
        self._fanout = fanout
        self._in_flight: set[str] = set()

    async def _refuse(self, duty: str, context: grpc.aio.ServicerContext) -> NoReturn:
        """End the RPC with FAILED_PRECONDITION: this worker's role does not take ``duty``."""
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                            f"worker {self._id} is a {self._role.name} worker; it does not {duty}")
        raise AssertionError("context.abort returned")  # it raises; this tells the type checker

    async def Prefill(self, request: pb.PrefillRequest, context: grpc.aio.ServicerContext) -> pb.PrefillResponse:
        handler = self._role.prefill
        if handler is None:
            await self._refuse("prefill", context)
        call = convert.prefill_call_from_pb(request)
        self._in_flight.add(call.request_id)
        try:
            handoff = await handler(self._engine, call)
        except DutyFailed as exc:
            await context.abort(grpc.StatusCode.INTERNAL, str(exc))
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        finally:
            self._in_flight.discard(call.request_id)
        return convert.prefill_response_to_pb(handoff)

    async def Generate(self, request: pb.GenerateRequest,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[pb.GenerateChunk]:
        handler = self._role.generate
        if handler is None:
            await self._refuse("decode", context)
        call = convert.generate_call_from_pb(request)
        self._in_flight.add(call.request_id)
        stream = handler(self._engine, call)
        try:
            async for chunk in stream:
                yield convert.token_chunk_to_pb(chunk)
        except ValueError as exc:  # the engine rejected the request, as in Prefill
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except HandoffVoid as exc:
            await context.abort(grpc.StatusCode.ABORTED, f"KV handoff void ({exc.reason}): {exc}",
                                trailing_metadata=((VOID_REASON_KEY, exc.reason),))
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
            self._in_flight.discard(call.request_id)

    async def Abort(self, request: pb.AbortRequest, context: grpc.aio.ServicerContext) -> pb.AbortResponse:
        request_id = convert.abort_request_from_pb(request)
        was_running = request_id in self._in_flight
        await self._engine.abort(request_id)
        return convert.abort_response_to_pb(was_running)

    async def GetLoad(self, request: pb.LoadRequest, context: grpc.aio.ServicerContext) -> pb.LoadReport:
        return convert.load_to_pb(WorkerLoad(engine=self._engine.load(), in_flight=len(self._in_flight)))

    async def GetInfo(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.WorkerInfo:
        return convert.info_to_pb(WorkerDescription(
            worker_id=self._id, role=self._role.name, host=self._host, engine_kind=self._kind,
            engine=self._engine.info(),
        ))

    async def StreamKvEvents(self, request: pb.EventsRequest,
                             context: grpc.aio.ServicerContext) -> AsyncIterator[pb.KvEventBatch]:
        async for batch in self._fanout.subscribe():
            yield convert.events_to_pb(batch)
