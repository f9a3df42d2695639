"""The decode's token stream as text: collected into one answer, or framed as server-sent events.

``decode_text`` turns the decode chunks into text deltas (incremental detokenization, stop strings) and
always closes the decode stream (which aborts the request on the worker if it had not finished) and
reports the cached prompt tokens. ``collect`` gathers a whole answer within the request deadline.
``sse_events`` frames the answer as OpenAI SSE: a first chunk, one chunk per text delta or finish, an
error event if the decode fails or runs past the deadline, the usage chunk when asked for, then
``data: [DONE]``; it records the request's outcome itself, since its 200 headers are long gone by then.
``unless_disconnected`` runs work that the client may abandon (``ClientGone``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request

from orchestrator.api.errors import upstream_error
from orchestrator.api.logprobs import LogprobText, LogprobTexts
from orchestrator.api.shapes import ResponseShape
from orchestrator.api.text import IncrementalText
from orchestrator.errors import WorkerError
from orchestrator.frontend import FlowRequest, Outcome, Placement, ServedModel

T = TypeVar("T")
DONE = b"data: [DONE]\n\n"


class ClientGone(Exception):
    """The HTTP client disconnected before the response started."""


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it (which aborts on the workers) and raise
    ``ClientGone``. Cancelling this call cancels ``work`` too."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if done:
                return task.result()
            if await request.is_disconnected():
                await _cancel_and_wait(task)
                raise ClientGone()
    except asyncio.CancelledError:
        await _cancel_and_wait(task)
        raise


_CANCEL_WAIT_S = 10.0


async def _cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait (bounded) until it has finished: its cleanup aborts the request on the
    workers, and a cancel that is only requested can be lost or outlive the HTTP request."""
    task.cancel()
    await asyncio.wait({task}, timeout=_CANCEL_WAIT_S)


@dataclass(frozen=True)
class TextDelta:
    """New text of one decode chunk; ``finish_reason`` is set on the last one. ``tokens``: generated
    so far; ``cached``: prompt tokens the engine found cached."""

    text: str
    finish_reason: str | None
    tokens: int
    cached: int
    logprobs: tuple[LogprobText, ...] | None = None  # of the tokens since the previous delta, when asked


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str
    tokens: int
    cached: int
    logprobs: tuple[LogprobText, ...] | None = None


async def decode_text(frontend: ServedModel, req: FlowRequest, placement: Placement,
                      text: IncrementalText) -> AsyncIterator[TextDelta]:
    """Text deltas of the decode, up to the finish (or the first stop string). Chunks that add no text
    are skipped. The cached tokens come from the KV handoff, or from the decode worker for a local
    prefill."""
    cached = placement.handoff.num_cached_tokens if placement.handoff is not None else 0
    tokens = 0
    logprobs = LogprobTexts(text.tokenizer) if req.sampling.logprobs is not None else None
    stream = frontend.stream(req, placement)
    try:
        async for chunk in stream:
            if placement.handoff is None and chunk.num_cached_tokens:
                cached = chunk.num_cached_tokens
            tokens += len(chunk.token_ids)
            if logprobs is not None:
                logprobs.add(chunk.token_ids, chunk.logprobs)
            delta, stopped = text.push(chunk.token_ids)
            if stopped or chunk.finished or delta:
                finish = "stop" if stopped else (chunk.finish_reason or "stop") if chunk.finished else None
                tail = text.flush() if chunk.finished and not stopped else ""
                yield TextDelta(delta + tail, finish, tokens, cached, logprobs.take() if logprobs else None)
                if finish is not None:
                    return
    finally:
        await stream.aclose()
        frontend.observe_cached(cached)


async def collect(frontend: ServedModel, req: FlowRequest, placement: Placement, text: IncrementalText) -> Answer:
    """The whole answer. Raises ``WorkerError``, or ``TimeoutError`` past ``frontend.request_timeout_s``."""
    parts: list[str] = []
    logprobs: list[LogprobText] | None = [] if req.sampling.logprobs is not None else None
    last = TextDelta("", "stop", 0, 0)
    async with asyncio.timeout(frontend.request_timeout_s):
        async for last in decode_text(frontend, req, placement, text):
            parts.append(last.text)
            if logprobs is not None:
                logprobs += last.logprobs or ()
    return Answer("".join(parts), last.finish_reason or "stop", last.tokens, last.cached,
                  None if logprobs is None else tuple(logprobs))


def _event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


async def sse_events(frontend: ServedModel, req: FlowRequest, placement: Placement, text: IncrementalText,
                     shape: ResponseShape, include_usage: bool) -> AsyncIterator[bytes]:
    """The SSE body of a streamed answer. Counts the request as ``200``, ``502`` (the decode failed or
    ran past the deadline: an error event ends the stream) or ``client_gone`` (cancelled)."""
    last = TextDelta("", None, 0, 0)
    outcome: Outcome = "200"
    opening = shape.role_chunk()
    try:
        async with asyncio.timeout(frontend.request_timeout_s):
            async for last in decode_text(frontend, req, placement, text):
                if opening is not None:
                    yield _event(opening)
                    opening = None
                yield _event(shape.chunk(last.text, last.finish_reason, last.logprobs))
    except (WorkerError, TimeoutError) as exc:
        outcome = "502"
        yield _event(upstream_error(exc, "Decode", frontend.request_timeout_s).body())
    except asyncio.CancelledError:
        frontend.record_outcome(shape.endpoint, "client_gone")
        raise
    if include_usage and outcome == "200":
        yield _event(shape.usage_chunk(len(req.prompt), last.tokens, last.cached))
    yield DONE
    frontend.record_outcome(shape.endpoint, outcome)
