"""A minimal prefill-then-decode proxy for two vLLM OpenAI servers with NixlConnector: vLLM's own P/D.

This is the request shape vLLM documents for its NixlConnector (its example proxy does the same):

1. the request goes to the prefill server with ``max_tokens: 1``, ``stream: false`` and
   ``kv_transfer_params: {"do_remote_decode": true, ...}``; its answer carries the ``kv_transfer_params``
   a decode needs (engine id, block ids, host, port);
2. the original request goes to the decode server with those ``kv_transfer_params``; the decode server
   pulls the KV over NIXL and its answer (streamed or not) is passed to the client byte for byte.

No routing, no retries: one prefill server and one decode server, for the cpu_vllm suite's ``vllm-pd``
target. A non-200 from either server is passed back as it came.

    python -m bench.suites.pd_proxy --prefill URL --decode URL --port PORT
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

REMOTE_DECODE = {"do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
                 "remote_block_ids": None, "remote_host": None, "remote_port": None}
TIMEOUT = httpx.Timeout(600.0, connect=10.0)


def prefill_body(body: dict[str, Any]) -> dict[str, Any]:
    """The prefill server's request: one token, not streamed, asking to keep the KV for a remote decode
    (a new dict; ``body`` is not changed)."""
    out = {k: v for k, v in body.items() if k not in ("stream_options", "max_completion_tokens")}
    return {**out, "max_tokens": 1, "stream": False, "kv_transfer_params": dict(REMOTE_DECODE)}


def decode_body(body: dict[str, Any], kv_transfer_params: dict[str, Any]) -> dict[str, Any]:
    """The decode server's request: the client's own, with the prefill's ``kv_transfer_params``."""
    return {**body, "kv_transfer_params": kv_transfer_params}


def create_app(prefill: str, decode: str) -> Starlette:
    """The proxy's ASGI app; one HTTP client per server, closed on shutdown."""
    clients = {"prefill": httpx.AsyncClient(base_url=prefill, timeout=TIMEOUT),
               "decode": httpx.AsyncClient(base_url=decode, timeout=TIMEOUT)}

    async def forward(request: Request) -> Response:
        body = await request.json()
        path = request.url.path
        first = await clients["prefill"].post(path, json=prefill_body(body))
        if first.status_code != 200:
            return Response(first.content, first.status_code, media_type="application/json")
        call = clients["decode"].build_request("POST", path, json=decode_body(body, first.json()["kv_transfer_params"]))
        answer = await clients["decode"].send(call, stream=True)
        if answer.status_code != 200 or not body.get("stream"):
            content = await answer.aread()
            await answer.aclose()
            return Response(content, answer.status_code, media_type="application/json")

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in answer.aiter_raw():
                    yield chunk
            finally:
                await answer.aclose()

        return StreamingResponse(chunks(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        reply = await clients["decode"].get("/v1/models")
        return JSONResponse(reply.json(), reply.status_code)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for client in clients.values():
            await client.aclose()

    return Starlette(routes=[Route("/v1/completions", forward, methods=["POST"]),
                             Route("/v1/chat/completions", forward, methods=["POST"]),
                             Route("/v1/models", models)], lifespan=lifespan)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prefill", required=True)
    p.add_argument("--decode", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    ns = p.parse_args()
    uvicorn.run(create_app(ns.prefill, ns.decode), host=ns.host, port=ns.port, log_level="warning")


if __name__ == "__main__":
    main()
