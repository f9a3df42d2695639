"""API keys at the HTTP edge: FastAPI dependencies over the front end's gate (``Frontend.auth``).

``KeyGuard.require_key`` (every /v1 route) puts the caller on ``request.state.caller`` or answers 401;
``require_admin`` (``/metrics`` and ``/health`` when ``auth.protect_*`` is set, and any future admin
endpoint) also wants an admin key, else 403. With authentication off (no ``auth.keys_file``) both let
everything through and the caller is None. ``admitted`` holds a request's admission ticket until its
response is done (the whole stream, for SSE). The key itself is never logged, echoed or stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTasks

from orchestrator.api.errors import admin_required, invalid_api_key, too_many_requests
from orchestrator.frontend import Caller, Frontend, Refused, Ticket


def caller_of(request: Request) -> Caller | None:
    """The authenticated caller of ``request`` (None when authentication is off)."""
    caller = getattr(request.state, "caller", None)
    return caller if isinstance(caller, Caller) else None


class KeyGuard:
    def __init__(self, frontend: Frontend) -> None:
        self._frontend = frontend

    async def require_key(self, request: Request) -> None:
        if not self._frontend.auth.enabled:
            return
        header = request.headers.get("authorization")
        caller = self._frontend.auth.authenticate(header)
        if caller is None:
            raise invalid_api_key(missing=not header)
        request.state.caller = caller

    async def require_admin(self, request: Request) -> None:
        await self.require_key(request)
        caller = caller_of(request)
        if self._frontend.auth.enabled and (caller is None or not caller.admin):
            raise admin_required()


def admit(frontend: Frontend, caller: Caller | None) -> Ticket:
    """The request's admission ticket, or 429 with Retry-After."""
    try:
        return frontend.admit(caller)
    except Refused as exc:
        raise too_many_requests(exc.message, exc.retry_after_s) from None


def held_until_sent(response: Response, ticket: Ticket) -> Response:
    """``response``, with ``ticket`` released once it is done: now for a whole answer, at the end of the
    body for a stream (or when the client leaves)."""
    if not isinstance(response, StreamingResponse):
        ticket.release()
        return response
    inner = response.body_iterator

    async def body() -> AsyncIterator[str | bytes | memoryview]:
        try:
            async for part in inner:
                yield part
        finally:
            ticket.release()
            close = getattr(inner, "aclose", None)
            if close is not None:
                await close()

    response.body_iterator = body()
    # Also when the body never started; after the response's own background task, if it has one.
    tasks = BackgroundTasks()
    if response.background is not None:
        tasks.add_task(response.background)
    tasks.add_task(ticket.release)
    response.background = tasks
    return response
