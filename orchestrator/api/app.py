"""FastAPI routes: /v1/chat/completions, /v1/completions, /v1/models, /health, /metrics.

Per request: validate, template and tokenize once, check the context length, place (route + prefill)
while watching for a client disconnect, then stream or collect the decode. Every response carries
``X-Prefill-Worker``, ``X-Decode-Worker`` and ``X-Route-Reason``. Errors are OpenAI-shaped JSON.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from orchestrator.api.errors import (
    APIError,
    api_error_handler,
    bad_request,
    not_found_model,
    unavailable,
    upstream_failed,
    validation_error_handler,
)
from orchestrator.api.schemas import ChatCompletionRequest, CompletionRequest
from orchestrator.api.shapes import ResponseShape
from orchestrator.api.text import IncrementalText, Tokenizer
from orchestrator.flow import FlowRequest, NoHealthyWorker, Placement
from orchestrator.pools.client import WorkerError
from orchestrator.service import Service
from protocol.types import SamplingSpec

T = TypeVar("T")


class ClientGone(Exception):
    """The HTTP client disconnected before the response started."""


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it (which aborts on the workers)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                raise ClientGone()
    except asyncio.CancelledError:
        task.cancel()
        raise


def create_app(service: Service, tokenizer: Tokenizer) -> FastAPI:
    app = FastAPI(title="pdserve", version="0.1.0")
    app.add_exception_handler(APIError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    model_name = service.config.model.name
    max_len = service.facts.max_model_len

    def sampling(body: ChatCompletionRequest | CompletionRequest, prompt_len: int) -> SamplingSpec:
        requested = body.requested_max_tokens()
        if prompt_len >= max_len:
            raise bad_request(f"The prompt has {prompt_len} tokens; this model's context is {max_len} tokens.",
                              "messages", "context_length_exceeded")
        if requested is not None and prompt_len + requested > max_len:
            raise bad_request(f"This model's maximum context length is {max_len} tokens. However, you requested "
                              f"{prompt_len + requested} tokens ({prompt_len} in the prompt, {requested} for the "
                              "completion).", "max_tokens", "context_length_exceeded")
        max_tokens = requested if requested is not None else max_len - prompt_len
        stop_ids = () if tokenizer.eos_token_id is None or body.ignore_eos else (tokenizer.eos_token_id,)
        return SamplingSpec(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                            seed=body.seed, stop_token_ids=stop_ids, ignore_eos=body.ignore_eos)

    async def serve(request: Request, body: ChatCompletionRequest | CompletionRequest, prompt: list[int],
                    shape: ResponseShape) -> Response:
        endpoint = shape.endpoint
        if body.model != model_name:
            raise not_found_model(body.model)
        spec = sampling(body, len(prompt))
        session = request.headers.get("x-session-id") or body.user
        flow_req = FlowRequest(request_id=shape.request_id, prompt=tuple(prompt), sampling=spec,
                               cache_salt=body.cache_salt, session_key=session)
        flow = service.flow
        try:
            placement = await _unless_disconnected(request, flow.place(flow_req))
        except ClientGone:
            service.metrics.requests.labels(endpoint, "client_gone").inc()
            return Response(status_code=499)
        except NoHealthyWorker as exc:
            service.metrics.requests.labels(endpoint, "503").inc()
            raise unavailable(f"No healthy worker can take the request: {exc}") from None
        except WorkerError as exc:
            service.metrics.requests.labels(endpoint, "502").inc()
            raise upstream_failed(f"Prefill failed: {exc}", exc.timed_out) from None
        headers = {"X-Prefill-Worker": placement.prefill_worker or "none",
                   "X-Decode-Worker": placement.decode_worker, "X-Route-Reason": placement.route_reason}
        text = IncrementalText(tokenizer, body.stop_list())
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = _sse(service, flow_req, placement, text, shape, include_usage)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        try:
            result = await _unless_disconnected(request, _collect(service, flow_req, placement, text))
        except ClientGone:
            service.metrics.requests.labels(endpoint, "client_gone").inc()
            return Response(status_code=499)
        except WorkerError as exc:
            service.metrics.requests.labels(endpoint, "502").inc()
            raise upstream_failed(f"Decode failed: {exc}", exc.timed_out) from None
        except TimeoutError:
            service.metrics.requests.labels(endpoint, "504").inc()
            raise upstream_failed(_request_timeout_message(service), True) from None
        service.metrics.requests.labels(endpoint, "200").inc()
        full_text, reason, completion_tokens, cached = result
        payload = shape.final(full_text, reason, len(prompt), completion_tokens, cached,
                              list(text.ids) if body.return_token_ids else None)
        return JSONResponse(payload, headers=headers)

    @app.post("/v1/chat/completions")
    async def chat(request: Request, body: ChatCompletionRequest) -> Response:
        messages = [{"role": m.role if m.role != "developer" else "system", "content": m.text()}
                    for m in body.messages]
        prompt = tokenizer.chat_prompt(messages)
        return await serve(request, body, prompt, ResponseShape.chat(model_name))

    @app.post("/v1/completions")
    async def completions(request: Request, body: CompletionRequest) -> Response:
        if isinstance(body.prompt, str):
            prompt = tokenizer.encode(body.prompt)
        else:
            prompt = [int(t) for t in body.prompt]
            if any(t < 0 for t in prompt):
                raise bad_request("prompt token ids must be non-negative", "prompt")
            if any(t >= tokenizer.vocab_size for t in prompt):
                raise bad_request(f"Token id {max(prompt)} is out of vocabulary (the model's token ids are below "
                                  f"{tokenizer.vocab_size}).", "prompt")
        if not prompt:
            raise bad_request("the prompt is empty", "prompt")
        return await serve(request, body, prompt, ResponseShape.completion(model_name))

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0,
                                            "owned_by": "pdserve", "max_model_len": max_len}]}

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 "ok": every worker answers; 200 "degraded": requests are served but not as configured
        (no prefill worker answers, so decode workers prefill locally); 503 "unavailable": no decode
        worker answers, nothing can be served."""
        decode_ok = bool(service.decode.healthy())
        prefill_ok = service.prefill is None or bool(service.prefill.healthy())
        local_fallback = service.config.disaggregation.local_when_prefill_saturated
        if not decode_ok or not (prefill_ok or local_fallback):
            status, code = "unavailable", 503
        else:
            status, code = ("ok" if prefill_ok else "degraded"), 200
        body = {"status": status,
                "prefill": [{"id": h.worker_id, "healthy": h.healthy} for h in (service.prefill or [])],
                "decode": [{"id": h.worker_id, "healthy": h.healthy} for h in service.decode]}
        return JSONResponse(body, status_code=code)

    @app.get("/metrics")
    async def metrics() -> Response:
        service.update_load_gauges()
        return Response(service.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


async def _decode_text(service: Service, req: FlowRequest, placement: Placement,
                       text: IncrementalText) -> AsyncIterator[tuple[str, str | None, int, int]]:
    """(text delta, finish reason or None, tokens so far, cached tokens) per chunk; stops on a stop string."""
    cached = placement.handoff.num_cached_tokens if placement.handoff is not None else 0
    tokens = 0
    stream = service.flow.stream(req, placement)
    try:
        async for chunk in stream:
            if placement.handoff is None and chunk.num_cached_tokens:
                cached = chunk.num_cached_tokens
            tokens += len(chunk.token_ids)
            delta, stopped = text.push(chunk.token_ids)
            if stopped:
                yield delta, "stop", tokens, cached
                return
            if chunk.finished:
                yield delta + text.flush(), chunk.finish_reason or "stop", tokens, cached
                return
            if delta:
                yield delta, None, tokens, cached
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
        service.flow.observe_cached(cached)


def _request_timeout_message(service: Service) -> str:
    limit = service.config.server.request_timeout_s
    return f"The request did not finish within server.request_timeout_s ({limit:g}s)."


async def _collect(service: Service, req: FlowRequest, placement: Placement,
                   text: IncrementalText) -> tuple[str, str, int, int]:
    parts: list[str] = []
    reason, tokens, cached = "stop", 0, 0
    deadline = service.config.server.request_timeout_s
    async with asyncio.timeout(deadline):
        async for delta, finish, tokens, cached in _decode_text(service, req, placement, text):  # noqa: B007
            parts.append(delta)
            if finish is not None:
                reason = finish
    return "".join(parts), reason, tokens, cached


async def _sse(service: Service, req: FlowRequest, placement: Placement, text: IncrementalText,
               shape: ResponseShape, include_usage: bool) -> AsyncIterator[bytes]:
    def event(payload: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()

    endpoint = shape.endpoint
    tokens, cached = 0, 0
    status = "200"
    yield event(shape.first_chunk())
    try:
        async with asyncio.timeout(service.config.server.request_timeout_s):
            async for delta, finish, tokens, cached in _decode_text(service, req, placement, text):  # noqa: B007
                if delta or finish is not None:
                    yield event(shape.chunk(delta, finish))
    except (WorkerError, TimeoutError) as exc:
        status = "502"
        message = f"Decode failed: {exc}" if isinstance(exc, WorkerError) else _request_timeout_message(service)
        error = upstream_failed(message, isinstance(exc, TimeoutError) or exc.timed_out)
        yield event(error.body())
    except asyncio.CancelledError:
        service.metrics.requests.labels(endpoint, "client_gone").inc()
        raise
    if include_usage and status == "200":
        yield event(shape.usage_chunk(len(req.prompt), tokens, cached))
    yield b"data: [DONE]\n\n"
    service.metrics.requests.labels(endpoint, status).inc()

