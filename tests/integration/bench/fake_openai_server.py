"""TEST FIXTURE for the benchmark *client*: a fake OpenAI-compatible streaming server.

It is not a model server and not part of pdserve. It streams ``max_tokens`` tokens with known timing
so the tests can check what ``pdserve-bench`` measures:

* first token ``ttft_s`` after the request arrives (a role-only chunk is sent at once, to check that
  TTFT waits for the first chunk carrying text); with ``prefill_slots`` set, at most that many
  requests are in their "prefill" sleep at once, the others queue, so TTFT grows with load;
* then one token every ``itl_s``; tokens are flushed ``tokens_per_chunk`` at a time (the first chunk
  always carries one token), so per-chunk ITL is ``tokens_per_chunk * itl_s`` while TPOT stays ``itl_s``;
* a final usage chunk: prompt tokens = words in the prompt, cached tokens = ``cached_fraction`` of
  them, completion tokens = ``max_tokens``;
* pdserve's routing headers, the prefill worker chosen by the parity of the prompt length.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

MODEL = "fake-model"


@dataclass(frozen=True)
class FakeTiming:
    ttft_s: float = 0.12
    itl_s: float = 0.03
    tokens_per_chunk: int = 1
    cached_fraction: float = 0.5
    prefill_slots: int | None = None


def _prompt_words(body: dict[str, Any]) -> int:
    if "messages" in body:
        return sum(len(str(m.get("content", "")).split()) for m in body["messages"])
    return len(str(body.get("prompt", "")).split())


def _chunk(kind: str, text: str | None, finish: str | None = None) -> dict[str, Any]:
    if kind == "chat":
        delta = {"content": text} if text is not None else {"role": "assistant"}
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        return {"object": "chat.completion.chunk", "model": MODEL, "choices": [choice]}
    return {
        "object": "text_completion",
        "model": MODEL,
        "choices": [{"index": 0, "text": text or "", "finish_reason": finish}],
    }


async def _events(
    kind: str, body: dict[str, Any], timing: FakeTiming, prefill: asyncio.Semaphore | None
) -> AsyncIterator[str]:
    n = int(body.get("max_tokens") or 16)
    prompt = _prompt_words(body)
    if kind == "chat":
        yield f"data: {json.dumps(_chunk(kind, None))}\n\n"
    if prefill is None:
        await asyncio.sleep(timing.ttft_s)
    else:
        async with prefill:
            await asyncio.sleep(timing.ttft_s)
    yield f"data: {json.dumps(_chunk(kind, 'tok0 '))}\n\n"
    pending: list[str] = []
    for i in range(1, n):
        await asyncio.sleep(timing.itl_s)
        pending.append(f"tok{i} ")
        if len(pending) == timing.tokens_per_chunk or i == n - 1:
            yield f"data: {json.dumps(_chunk(kind, ''.join(pending)))}\n\n"
            pending = []
    yield f"data: {json.dumps(_chunk(kind, '', finish='length'))}\n\n"
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": n,
        "total_tokens": prompt + n,
        "prompt_tokens_details": {"cached_tokens": int(prompt * timing.cached_fraction)},
    }
    yield f"data: {json.dumps({'object': 'chunk', 'model': MODEL, 'choices': [], 'usage': usage})}\n\n"
    yield "data: [DONE]\n\n"


def make_app(timing: FakeTiming) -> FastAPI:
    app = FastAPI()
    prefill = asyncio.Semaphore(timing.prefill_slots) if timing.prefill_slots else None

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": MODEL, "object": "model"}]}

    async def serve(kind: str, request: Request) -> Any:
        body = await request.json()
        if not body.get("stream") or not body.get("stream_options", {}).get("include_usage"):
            return JSONResponse({"error": {"message": "fake server only streams with usage"}}, status_code=400)
        headers = {
            "X-Prefill-Worker": f"prefill-{_prompt_words(body) % 2}",
            "X-Decode-Worker": "decode-0",
            "X-Route-Reason": "prefix_match",
        }
        return StreamingResponse(_events(kind, body, timing, prefill), media_type="text/event-stream", headers=headers)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        return await serve("chat", request)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await serve("completions", request)

    return app


@contextmanager
def serve_in_thread(timing: FakeTiming) -> Iterator[str]:
    """Run the fake server on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(make_app(timing), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("fake OpenAI server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
