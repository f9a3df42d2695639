"""The HTTP handlers: /v1/chat/completions, /v1/completions, /v1/models, /health, /metrics.

A completion request: build the prompt (tokenized once), admit it (model name, context length,
sampling), place it (route + prefill) while watching for a client disconnect, then stream or collect
the decode. Every answer to a placed request carries ``X-Prefill-Worker`` (``none`` for a local
prefill), ``X-Decode-Worker`` and ``X-Route-Reason``. Errors are OpenAI-shaped JSON; a client that
leaves before the answer starts gets 499. Each placed request is counted once with its outcome
(``Frontend.record_outcome``); requests refused at admission are not counted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from orchestrator.api.admission import Body, chat_prompt, completion_prompt, flow_request
from orchestrator.api.auth import admit, caller_of, held_until_sent
from orchestrator.api.errors import (
    UNAVAILABLE_RETRY_AFTER_S,
    APIError,
    UpstreamFailure,
    not_found_model,
    outcome_of,
    upstream_error,
)
from orchestrator.api.limits import Offload, check_request
from orchestrator.api.schemas import ChatCompletionRequest, CompletionRequest
from orchestrator.api.shapes import ResponseShape
from orchestrator.api.streaming import ClientGone, collect, sse_events, unless_disconnected
from orchestrator.api.text import IncrementalText, Tokenizer
from orchestrator.errors import NoHealthyWorker, WorkerError
from orchestrator.frontend import Frontend, HealthReport, ModelCard, Placement, ServedModel, WorkerHealth

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
B = TypeVar("B", ChatCompletionRequest, CompletionRequest)


def route_headers(placement: Placement) -> dict[str, str]:
    return {"X-Prefill-Worker": placement.prefill_worker or "none", "X-Decode-Worker": placement.decode_worker,
            "X-Route-Reason": placement.route_reason}


class Routes:
    """The handlers, bound to one ``Frontend`` and each served model's tokenizer, by model name
    (``create_app`` registers them)."""

    def __init__(self, frontend: Frontend, tokenizers: Mapping[str, Tokenizer]) -> None:
        self._frontend = frontend
        self._tokenizers = dict(tokenizers)
        self._offload = Offload(frontend.limits.tokenize_threads)  # templating and tokenizing: off the loop

    async def chat(self, request: Request, body: ChatCompletionRequest) -> Response:
        return await self._serve(request, body, chat_prompt, ResponseShape.chat)

    async def completions(self, request: Request, body: CompletionRequest) -> Response:
        return await self._serve(request, body, completion_prompt, ResponseShape.completion)

    async def models(self) -> dict[str, Any]:
        """Every model, each followed by its LoRA adapters (``parent``: the model serving it), as vLLM lists them."""
        return {"object": "list", "data": [{"id": model.name, "object": "model", "created": 0, "owned_by": "pdserve",
                                            "max_model_len": model.max_model_len, "parent": model.parent}
                                           for model in self._frontend.models]}

    async def health(self) -> JSONResponse:
        """200 with ``ok`` or ``degraded``, 503 with ``unavailable`` (see ``DeploymentHealth``). ``prefill``,
        ``decode`` and ``pools`` cover every model's workers; ``models`` has each model's own report."""
        report = self._frontend.health()
        reports = report.models.values()
        every = HealthReport(report.status, tuple(w for r in reports for w in r.prefill),
                             tuple(w for r in reports for w in r.decode))  # all models' workers as one
        body = {"status": report.status,
                "prefill": [_worker(w) for w in every.prefill],
                "decode": [_worker(w) for w in every.decode],
                "pools": every.counts(),
                "models": {name: {"status": r.status, "pools": r.counts()} for name, r in report.models.items()}}
        if report.serving:
            return JSONResponse(body)
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)})

    async def metrics(self) -> Response:
        return Response(self._frontend.metrics_text(), media_type=PROMETHEUS_TEXT)

    async def _serve(self, request: Request, body: B, prompt_of: Callable[[B, Tokenizer], list[int]],
                     shape_of: Callable[[str], ResponseShape]) -> Response:
        """Check ``body``'s limits, find the model it names (itself or through one of its LoRA adapters;
        404 when nothing served has that name) and build its prompt; admit the request (429 past its key's
        or the deployment's limits), then serve it. The admission is held until the response is done."""
        check_request(body, self._frontend.limits)
        try:
            served, card = self._frontend.model(body.model)
        except KeyError:
            raise not_found_model(body.model) from None
        tokenizer = self._tokenizers[served.name]
        prompt = await self._offload.run(prompt_of, body, tokenizer)
        shape = shape_of(card.name)
        caller = caller_of(request)
        ticket = admit(self._frontend, caller)
        try:
            response = await self._serve_admitted(request, body, prompt, served, card, tokenizer, shape,
                                                  caller.tenant if caller else None)
        except BaseException:
            ticket.release()
            raise
        return held_until_sent(response, ticket)

    async def _serve_admitted(self, request: Request, body: Body, prompt: list[int], served: ServedModel,
                              card: ModelCard, tokenizer: Tokenizer, shape: ResponseShape,
                              tenant: str | None) -> Response:
        session = request.headers.get("x-session-id")
        req = flow_request(body, prompt, shape.request_id, session, card, tokenizer, tenant,
                           self._frontend.limits.default_max_tokens)
        try:
            placement = await unless_disconnected(request, served.place(req))
        except ClientGone:
            return _gone(served, shape)
        except (NoHealthyWorker, WorkerError) as exc:
            raise _failed(served, shape, exc, "Prefill") from None
        headers = route_headers(placement)
        text = IncrementalText(tokenizer, body.stop_list())
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = sse_events(served, req, placement, text, shape, include_usage)
            # The release runs after the body, or instead of it when the client left before it started.
            return StreamingResponse(events, media_type="text/event-stream", headers=headers,
                                     background=BackgroundTask(served.release, req, placement))
        try:
            answer = await unless_disconnected(request, collect(served, req, placement, text))
        except ClientGone:
            return _gone(served, shape)
        except (WorkerError, TimeoutError) as exc:
            raise _failed(served, shape, exc, "Decode") from None
        finally:
            await served.release(req, placement)
        served.record_outcome(shape.endpoint, "200")
        payload = shape.final(answer.text, answer.finish_reason, len(prompt), answer.tokens, answer.cached,
                              list(text.ids) if body.return_token_ids else None, answer.logprobs)
        return JSONResponse(payload, headers=headers)


def _worker(w: WorkerHealth) -> dict[str, Any]:
    return {"id": w.worker_id, "healthy": w.healthy, "draining": w.draining}


def _gone(served: ServedModel, shape: ResponseShape) -> Response:
    served.record_outcome(shape.endpoint, "client_gone")
    return Response(status_code=499)


def _failed(served: ServedModel, shape: ResponseShape, exc: UpstreamFailure, stage: str) -> APIError:
    served.record_outcome(shape.endpoint, outcome_of(exc))
    return upstream_error(exc, stage, served.request_timeout_s)
