"""Bounded work per request (``limits:`` in the config, ``LimitsConfig``).

- ``BodySizeLimit``: an ASGI middleware that refuses a body over ``max_body_bytes`` with 413 before
  anything parses it: at once from its ``Content-Length``, or as soon as a chunked body's bytes pass the
  limit, and the connection is closed. The rest of the body is never read (reading and dropping 50 MB
  kept the event loop busy for seconds); clients such as httpx read the 413 that arrived while they
  were still sending.
- ``check_request``: the counts and sizes of a validated body (messages, stop strings, prompt
  characters), checked before the chat template or the tokenizer sees it.
- ``Offload``: a bounded thread pool in which templating and tokenization run, off the event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from starlette.exceptions import HTTPException

from orchestrator.api.errors import APIError, bad_request
from orchestrator.api.schemas import ChatCompletionRequest, CompletionRequest
from orchestrator.frontend import LimitsConfig

T = TypeVar("T")
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]

class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit. An ``HTTPException``, so that
    FastAPI passes it on while it reads the body and it is answered 413 (``errors.http_error_handler``)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large(limit).message, {"Connection": "close"})


def too_large(limit: int) -> APIError:
    return APIError(413, f"The request body is larger than the server's limit of {limit} bytes "
                    "(limits.max_body_bytes).", "invalid_request_error", None, "request_too_large")


class BodySizeLimit:
    """Pure ASGI middleware: HTTP request bodies larger than ``max_bytes`` are answered 413 in the OpenAI
    error shape, and the app never sees them. Bodies within the limit pass through chunk by chunk."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _refuse(send, self.max_bytes)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message: Message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await _refuse(send, self.max_bytes)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, limit: int) -> None:
    payload = json.dumps(too_large(limit).body()).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})


def check_request(body: ChatCompletionRequest | CompletionRequest, limits: LimitsConfig) -> None:
    """400 when ``body`` has more messages, stop strings or prompt characters than ``limits`` allow.
    Cheap: nothing is templated or tokenized yet."""
    stops = body.stop_list()
    if len(stops) > limits.max_stop:
        raise bad_request(f"At most {limits.max_stop} stop sequences are allowed; got {len(stops)}.", "stop",
                          "too_many_stop_sequences")
    if any(len(s) > limits.max_stop_chars for s in stops):
        raise bad_request(f"Each stop sequence may have at most {limits.max_stop_chars} characters.", "stop",
                          "stop_sequence_too_long")
    if isinstance(body, ChatCompletionRequest):
        if len(body.messages) > limits.max_messages:
            raise bad_request(f"At most {limits.max_messages} messages are allowed; got {len(body.messages)}.",
                              "messages", "too_many_messages")
        chars, param = sum(m.char_count() for m in body.messages), "messages"
    else:
        chars, param = (len(body.prompt) if isinstance(body.prompt, str) else 0), "prompt"
    if chars > limits.max_prompt_chars:
        raise bad_request(f"The prompt has {chars} characters; this server accepts at most "
                          f"{limits.max_prompt_chars} (limits.max_prompt_chars).", param, "prompt_too_long")


class Offload:
    """A bounded pool of threads for CPU-heavy request work (chat template, tokenization), so that one
    large prompt never stalls the event loop that serves every other request."""

    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pdserve-tokenize")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
