"""A load client for ``test_load_streams``, run as its own process so that the front end's process
holds only the front end: ``python load_client.py URL MODEL STREAMS MAX_TOKENS``. Opens every stream
at once over one connection each, reads each to ``[DONE]``, and prints one JSON line: how many streams
ended well, the errors (status or error event, first few), tokens of text chunks, and the wall time.
Bounded: every request has a 120 s timeout."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httpx


async def one(client: httpx.AsyncClient, url: str, model: str, i: int, max_tokens: int) -> str | None:
    """None when the stream ended with ``[DONE]`` after its text and a finish reason, else why not."""
    body = {"model": model, "prompt": f"load test stream {i} says", "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "cache_salt": f"s{i}"}
    finished = False
    async with client.stream("POST", f"{url}/v1/completions", json=body) as reply:
        if reply.status_code != 200:
            return f"HTTP {reply.status_code}: {(await reply.aread())[:200]!r}"
        async for line in reply.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                return None if finished else "no finish reason before [DONE]"
            event = json.loads(data)
            if "error" in event:
                return f"error event: {event['error']['message'][:200]}"
            finished = finished or event["choices"][0]["finish_reason"] is not None
    return "stream ended without [DONE]"


async def main(url: str, model: str, streams: int, max_tokens: int) -> dict[str, object]:
    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(one(client, url, model, i, max_tokens) for i in range(streams)),
                                       return_exceptions=True)
        seconds = time.perf_counter() - started
    errors = [repr(r) if isinstance(r, BaseException) else r for r in results if r is not None]
    return {"streams": streams, "ok": streams - len(errors), "errors": len(errors), "first_errors": errors[:5],
            "seconds": round(seconds, 2)}


if __name__ == "__main__":
    url, model, streams, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(asyncio.run(main(url, model, streams, max_tokens))))
