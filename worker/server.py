"""The worker's gRPC service: the same runtime for prefill, decode and colocated ("both") roles.

Owns nothing but bookkeeping; the engine belongs to ``worker.main``. A client that cancels a
``Generate`` stream (disconnect, deadline) cancels the handler, which closes the engine iterator and
so aborts the request in the engine.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc

from decode.role import stream_decode
from prefill.role import PrefillFailed, run_prefill
from protocol import convert
from protocol import worker_pb2 as pb
from protocol import worker_pb2_grpc as pb_grpc
from worker.engine import EngineAdapter
from worker.event_fanout import EventFanout

log = logging.getLogger(__name__)

ROLES_SERVING = {"prefill": {"prefill"}, "decode": {"decode"}, "both": {"prefill", "decode"}}


class WorkerService(pb_grpc.WorkerServicer):
    def __init__(self, worker_id: str, role: str, host: str, engine_kind: str, engine: EngineAdapter,
                 fanout: EventFanout) -> None:
        if role not in ROLES_SERVING:
            raise ValueError(f"unknown role {role!r}; known: {sorted(ROLES_SERVING)}")
        self._id = worker_id
        self._role = role
        self._host = host
        self._kind = engine_kind
        self._engine = engine
        self._fanout = fanout
        self._in_flight: set[str] = set()

    async def _require(self, duty: str, context: grpc.aio.ServicerContext) -> None:
        if duty not in ROLES_SERVING[self._role]:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"worker {self._id} is a {self._role} worker; it does not {duty}")

    async def Prefill(self, request: pb.PrefillRequest, context: grpc.aio.ServicerContext) -> pb.PrefillResponse:
        await self._require("prefill", context)
        self._in_flight.add(request.request_id)
        try:
            result = await run_prefill(
                self._engine, request.request_id, tuple(request.prompt_token_ids),
                convert.sampling_from_pb(request.sampling), request.cache_salt or None,
            )
        except PrefillFailed as exc:
            await context.abort(grpc.StatusCode.INTERNAL, str(exc))
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        finally:
            self._in_flight.discard(request.request_id)
        return pb.PrefillResponse(handoff=convert.handoff_to_pb(result.handoff), prefill_seconds=result.seconds)

    async def Generate(self, request: pb.GenerateRequest,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[pb.GenerateChunk]:
        await self._require("decode", context)
        handoff = convert.handoff_from_pb(request.handoff) if request.HasField("handoff") else None
        self._in_flight.add(request.request_id)
        stream = stream_decode(
            self._engine, request.request_id, tuple(request.prompt_token_ids),
            convert.sampling_from_pb(request.sampling), handoff, request.cache_salt or None,
        )
        try:
            async for delta in stream:
                yield pb.GenerateChunk(
                    token_ids=list(delta.token_ids), finished=delta.finished,
                    finish_reason=delta.finish_reason or "", num_cached_tokens=delta.num_cached_tokens,
                )
        except ValueError as exc:  # the engine rejected the request, as in Prefill
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
            self._in_flight.discard(request.request_id)

    async def Abort(self, request: pb.AbortRequest, context: grpc.aio.ServicerContext) -> pb.AbortResponse:
        was_running = request.request_id in self._in_flight
        await self._engine.abort(request.request_id)
        return pb.AbortResponse(was_running=was_running)

    async def GetLoad(self, request: pb.LoadRequest, context: grpc.aio.ServicerContext) -> pb.LoadReport:
        return convert.load_to_pb(convert.WorkerLoad(engine=self._engine.load(), in_flight=len(self._in_flight)))

    async def GetInfo(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.WorkerInfo:
        return convert.info_to_pb(convert.WorkerDescription(
            worker_id=self._id, role=self._role, host=self._host, engine_kind=self._kind,
            engine=self._engine.info(),
        ))

    async def StreamKvEvents(self, request: pb.EventsRequest,
                             context: grpc.aio.ServicerContext) -> AsyncIterator[pb.KvEventBatch]:
        async for batch in self._fanout.subscribe():
            yield convert.events_to_pb(batch)
