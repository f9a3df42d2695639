"""Streaming HTTP client: one ``RequestSpec`` sent to one target -> one ``RequestRecord``.

Uses httpx directly (not the ``openai`` SDK) to see the raw arrival time of every SSE line and the
response headers pdserve adds (``X-Prefill-Worker``, ``X-Decode-Worker``, ``X-Route-Reason``).
``send`` never raises for a failed request: failures come back as records with ``error`` set (only
cancellation propagates). Traffic goes only to the URL of the ``Target`` given.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from bench import sse
from bench.api import ApiKind, SamplingOptions
from bench.record import RequestRecord
from bench.spec import RequestSpec

ROUTE_HEADERS = {
    "prefill_worker": "x-prefill-worker",
    "decode_worker": "x-decode-worker",
    "route_reason": "x-route-reason",
}


def normalize_url(url: str) -> str:
    """``http://h:p``, ``http://h:p/`` and ``http://h:p/v1`` all mean the server root ``http://h:p``."""
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"target URL must start with http:// or https://, got {url!r}")
    return url


@dataclass(frozen=True)
class Target:
    """A named OpenAI-compatible server (``url`` is its root, without ``/v1``)."""

    name: str
    url: str
    api_key: str | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


async def list_models(client: httpx.AsyncClient, target: Target, timeout: float = 10.0) -> list[str]:
    """Model ids served by ``target`` (GET /v1/models), in the server's order."""
    resp = await client.get(f"{target.url}/v1/models", headers=target.headers(), timeout=timeout)
    resp.raise_for_status()
    return [str(m["id"]) for m in resp.json().get("data", [])]


@dataclass
class _Progress:
    """Mutable accumulator filled while streaming, turned into a frozen record at the end."""

    chunk_times: list[float] = field(default_factory=list)
    usage: sse.Usage | None = None
    headers: dict[str, str | None] = field(default_factory=dict)
    status: int | None = None
    e2e: float | None = None
    error: str | None = None


async def send(
    client: httpx.AsyncClient,
    target: Target,
    api: ApiKind,
    spec: RequestSpec,
    model: str,
    options: SamplingOptions,
    *,
    timeout: float,
    run_start: float,
    clock: Callable[[], float] = time.perf_counter,
) -> RequestRecord:
    """Send ``spec`` and stream the answer; ``run_start`` is the run's origin on ``clock``.

    The whole request (connect to last byte) is bounded by ``timeout`` seconds; a timed-out request
    keeps the chunks it received and has ``error`` set.
    """
    body = api.body(spec, model, options)
    headers = target.headers()
    if spec.session_id is not None:  # the turns of one conversation (pdserve's session policy reads it)
        headers["X-Session-Id"] = spec.session_id
    p = _Progress()

    async def stream() -> None:
        """Fill ``p`` from the response; times are offsets from ``t0``, taken just before the call."""
        async with client.stream("POST", f"{target.url}{api.path}", json=body, headers=headers) as resp:
            p.status = resp.status_code
            p.headers = {field_: resp.headers.get(h) for field_, h in ROUTE_HEADERS.items()}
            if resp.status_code != 200:
                text = (await resp.aread()).decode("utf-8", "replace")
                p.error = f"HTTP {resp.status_code}: {text[:300]}"
                return
            async for line in resp.aiter_lines():
                now = clock()
                event = sse.parse_line(line)
                if event is sse.DONE:
                    p.e2e = now - t0
                    return
                if not isinstance(event, dict):
                    continue
                err = sse.error_of(event)
                if err is not None:
                    p.error = f"stream error: {err}"
                    return
                if api.text_of(event):
                    p.chunk_times.append(now - t0)
                p.usage = sse.usage_of(event) or p.usage
            p.e2e = clock() - t0  # stream closed without [DONE]: take the close as the end

    t0 = clock()
    try:
        await asyncio.wait_for(stream(), timeout)
    except asyncio.TimeoutError:
        p.error, p.e2e = f"timeout after {timeout:g}s", None
    except (httpx.HTTPError, ValueError, KeyError) as e:  # transport errors, bad JSON
        p.error, p.e2e = f"{type(e).__name__}: {e}", None
    if p.error is None and not p.chunk_times:
        p.error = "no generated text in the stream"
    usage = p.usage
    return RequestRecord(
        request_id=spec.request_id,
        sent_s=t0 - run_start,
        chunk_times_s=tuple(p.chunk_times),
        e2e_s=p.e2e,
        scheduled_s=spec.arrival_s,
        session_id=spec.session_id,
        turn=spec.turn,
        prompt_tokens=usage.prompt_tokens if usage else None,
        cached_tokens=usage.cached_tokens if usage else None,
        output_tokens=usage.completion_tokens if usage else None,
        prefill_worker=p.headers.get("prefill_worker"),
        decode_worker=p.headers.get("decode_worker"),
        route_reason=p.headers.get("route_reason"),
        status=p.status,
        error=p.error,
    )
