"""The admin API over the worker registry (``orchestrator.membership``), always behind an admin key
when authentication is on:

- ``GET /admin/workers``: every worker with its pool, state (starting, healthy, draining, down), node,
  gRPC address, NIXL side channel, process, restarts and requests in flight;
- ``POST /admin/pools/{pool}/scale`` with ``{"replicas": N}`` (and ``"model": NAME`` when the server
  serves several models): 202 with the workers being added or drained (the change runs in the
  background; ``GET /admin/workers`` shows its progress);
- ``POST /admin/workers/{worker_id}/drain``: 202; the worker takes no new requests and leaves its pool
  once its in-flight requests are done.

Refusals are OpenAI-shaped errors: 404 for an unknown pool, model or worker, 400 for a bad count or a
missing model, 409 when the
server cannot do it (workers it did not launch, a worker still starting).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.api.errors import APIError
from orchestrator.frontend import Frontend, MembershipError


class ScaleBody(BaseModel):
    """``POST /admin/pools/{pool}/scale``'s body; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(ge=0, le=4096)
    model: str | None = None


def _refused(exc: MembershipError) -> APIError:
    code = {404: "not_found", 400: "invalid_value"}.get(exc.status, "conflict")
    return APIError(exc.status, str(exc), "invalid_request_error", None, code)


class AdminRoutes:
    def __init__(self, frontend: Frontend) -> None:
        self._frontend = frontend

    async def workers(self) -> dict[str, Any]:
        views = self._frontend.workers()
        return {"object": "list", "data": [{"id": v.worker_id, **asdict(v)} for v in views]}

    async def scale(self, pool: str, body: ScaleBody) -> JSONResponse:
        try:
            order = self._frontend.scale(pool, body.replicas, body.model)
        except MembershipError as exc:
            raise _refused(exc) from None
        return JSONResponse(asdict(order), status_code=202)

    async def drain(self, worker_id: str) -> JSONResponse:
        try:
            view = self._frontend.drain(worker_id)
        except MembershipError as exc:
            raise _refused(exc) from None
        return JSONResponse({"id": view.worker_id, **asdict(view)}, status_code=202)
