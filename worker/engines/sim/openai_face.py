"""An HTTP face for one simulated engine: vLLM's OpenAI API over a started ``SimEngine`` (the very adapter
pdserve's gRPC worker drives), so routers that speak to vLLM (vllm-router, sglang-router, llm-d) drive the
same simulated engines pdserve drives over gRPC.

Routes, in vLLM's shapes (``openai_render``): ``GET /health`` (200 while the engine runs, else 503),
``GET /v1/models``, ``GET /metrics`` (Prometheus text under vLLM's metric names, ``openai_metrics``),
``POST /v1/completions`` and ``POST /v1/chat/completions`` (streamed as SSE or not; bodies in
``openai_models``). Every error is vLLM's ``ErrorResponse`` JSON; a body that does not validate, a field
the face does not implement included, is a 400 (never FastAPI's 422). A client that leaves, streamed or
not, aborts its request in the engine.

P/D as vLLM's NixlConnector does it: a request with ``kv_transfer_params.do_remote_decode`` runs as a
prefill (one token; the prompt's blocks held under the engine's lease) and its body returns the
``kv_transfer_params`` a decode needs; a request carrying those (``do_remote_prefill``) pulls the KV through
the sim engine's handoff path (in-process peer or side channel) and decodes. A pull that fails answers 500,
as vLLM's default ``kv_load_failure_policy`` ("fail") does. Text needs a ``Tokenizer``; without one only
token-id prompts are served and answers carry empty text (ask ``return_token_ids``).

The face owns neither the engine nor the tokenizer: the caller starts and shuts them down.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from protocol.types import KVHandoff, SamplingSpec
from transfer.handoff import handoff_from_vllm
from worker.engine import EngineRequest, HandoffVoid, TokenDelta
from worker.engines.sim import openai_render as render
from worker.engines.sim.adapter import SimEngine
from worker.engines.sim.openai_metrics import VllmMetrics
from worker.engines.sim.openai_models import ChatCompletionRequest, CompletionRequest, KvTransferParams
from worker.engines.sim.text import Detokenizer, Tokenizer


class FaceError(Exception):
    """A request the face answers with an error: HTTP ``status``, vLLM's error body."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


class SimOpenAIFace:
    """The FastAPI ``app`` over ``engine`` (started by the caller). ``served_model_name``: the model name
    the API answers to (default: the engine's). Counters of finished requests feed ``/metrics``."""

    def __init__(self, engine: SimEngine, *, tokenizer: Tokenizer | None = None,
                 served_model_name: str | None = None) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        info = engine.info()
        self.model = served_model_name or info.model
        self.max_model_len = info.max_model_len
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.finished: Counter[str] = Counter()
        self.registry = CollectorRegistry()
        self.registry.register(VllmMetrics(engine, self))
        self.app = self._build()

    # ----------------------------------------------------------------- routes
    def _build(self) -> FastAPI:
        app = FastAPI(title="pdserve sim engine (vLLM OpenAI API)", docs_url=None, redoc_url=None)

        @app.exception_handler(FaceError)
        async def _face_error(_: Request, exc: FaceError) -> JSONResponse:
            return JSONResponse(render.error(exc.status, exc.message, exc.param), status_code=exc.status)

        @app.exception_handler(RequestValidationError)
        async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
            errors = list(exc.errors())
            where = [".".join(str(p) for p in e.get("loc", ()) if p != "body") for e in errors]
            message = "; ".join(f"{w or 'body'}: {e.get('msg', 'invalid')}" for w, e in zip(where, errors, strict=True))
            param = where[0] if where and where[0] else None  # "" is the body as a whole
            return JSONResponse(render.error(400, message or "invalid request", param), status_code=400)

        @app.get("/health")
        async def health() -> Response:
            if not self.engine.running:
                raise FaceError(503, "the engine is not running")
            return Response(status_code=200)

        @app.get("/v1/models")
        async def models() -> dict[str, object]:
            card = {"id": self.model, "object": "model", "created": int(time.time()), "owned_by": "vllm",
                    "root": self.model, "parent": None, "max_model_len": self.max_model_len, "permission": []}
            return {"object": "list", "data": [card]}

        @app.get("/metrics")
        async def metrics() -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        @app.post("/v1/completions", response_model=None)
        async def completions(body: CompletionRequest, raw: Request) -> Response:
            self._check_model(body.model)
            if isinstance(body.prompt, str):
                prompt = self._need_tokenizer("prompt").encode(body.prompt, add_special_tokens=body.add_special_tokens)
            else:
                prompt = list(body.prompt)
            return await self._serve(raw, "completion", "cmpl", body, prompt, body.max_tokens)

        @app.post("/v1/chat/completions", response_model=None)
        async def chat(body: ChatCompletionRequest, raw: Request) -> Response:
            self._check_model(body.model)
            tokenizer = self._need_tokenizer("messages")
            messages = [{"role": m.role, "content": m.text(), **({"name": m.name} if m.name else {})}
                        for m in body.messages]
            try:
                prompt = tokenizer.chat_prompt(messages, add_generation_prompt=body.add_generation_prompt)
            except Exception as exc:  # the template refused the conversation (jinja raises its own errors)
                raise FaceError(400, f"chat template: {exc}", "messages") from None
            return await self._serve(raw, "chat", "chatcmpl", body, prompt, body.limit())

        return app

    # ----------------------------------------------------------------- one request
    async def _serve(self, raw: Request, kind: render.Kind, prefix: str,
                     body: CompletionRequest | ChatCompletionRequest, prompt: list[int], limit: int | None) -> Response:
        options = body.stream_options
        call = render.Call(kind, f"{prefix}-{body.request_id or uuid.uuid4().hex}", self.model, int(time.time()),
                           prompt, include_usage=bool(options and options.include_usage),
                           continuous_usage=bool(options and options.continuous_usage_stats),
                           return_token_ids=bool(body.return_token_ids))
        sampling = SamplingSpec(max_tokens=self._max_tokens(limit, len(prompt), kind),
                                temperature=1.0 if body.temperature is None else body.temperature,
                                top_p=1.0 if body.top_p is None else body.top_p, seed=body.seed,
                                stop_token_ids=tuple(body.stop_token_ids or ()), ignore_eos=body.ignore_eos)
        params = body.kv_transfer_params
        request = EngineRequest(call.id, tuple(prompt), sampling, cache_salt=body.cache_salt,
                                remote_decode=bool(params and params.do_remote_decode),
                                handoff=_handoff(params, len(prompt)))
        deltas = cast(AsyncGenerator[TokenDelta, None], self.engine.generate(request))
        try:
            first = await anext(deltas)
        except HandoffVoid as exc:
            raise FaceError(500, f"KV transfer failed ({exc.reason}): {exc}", "kv_transfer_params") from None
        except ValueError as exc:
            raise FaceError(400, str(exc)) from None
        except RuntimeError as exc:
            raise FaceError(503, str(exc)) from None
        if body.stream:
            return StreamingResponse(self._events(call, first, deltas), media_type="text/event-stream")
        collecting = asyncio.create_task(self._collect(call, first, deltas))
        watching = asyncio.create_task(_disconnected(raw))
        await asyncio.wait((collecting, watching), return_when=asyncio.FIRST_COMPLETED)
        left = not collecting.done()  # the client left: closing the deltas aborts the request in the engine
        for task in (collecting, watching):
            task.cancel()
        await asyncio.gather(collecting, watching, return_exceptions=True)
        failed = None if left else collecting.exception()  # (a cancelled task has no exception to ask for)
        if left or failed is not None:
            self._count(call, "abort")
            if left:
                return Response(status_code=499)  # nobody reads it
            raise FaceError(500, f"the engine failed: {failed}")
        text, last = collecting.result()
        self._count(call, last.finish_reason)
        return JSONResponse(render.response(call, text, last.finish_reason, last.handoff))

    async def _collect(self, call: render.Call, first: TokenDelta,
                       deltas: AsyncGenerator[TokenDelta, None]) -> tuple[str, TokenDelta]:
        """The whole answer of a non-streamed request: its text and its last delta."""
        detok = Detokenizer(self.tokenizer)
        last, text = first, self._take(call, detok, first)
        try:
            while not last.finished:
                last = await anext(deltas)
                text += self._take(call, detok, last)
        finally:
            await deltas.aclose()
        return text, last

    async def _events(self, call: render.Call, first: TokenDelta,
                      deltas: AsyncGenerator[TokenDelta, None]) -> AsyncIterator[str]:
        """SSE events of a streamed request; closing it early (the client left) aborts the request."""
        detok = Detokenizer(self.tokenizer)
        delta, opening, finish = first, True, "abort"
        try:
            if call.kind == "chat":
                yield render.chunk(call, "", [], None, first=True)  # the role, as vLLM's first chunk
                opening = False
            while True:
                text = self._take(call, detok, delta)
                if delta.token_ids or delta.finished:  # vLLM sends a chunk per new tokens, text or not
                    yield render.chunk(call, text, list(delta.token_ids), delta.finish_reason, first=opening)
                    opening = False
                if delta.finished:
                    finish = delta.finish_reason or "abort"
                    break
                delta = await anext(deltas)
        except (HandoffVoid, RuntimeError) as exc:
            yield render.sse(render.error(500, str(exc)))
            yield render.DONE
            return
        finally:
            await deltas.aclose()
            self._count(call, finish)
        if call.include_usage:
            yield render.usage_chunk(call)
        yield render.DONE

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _take(call: render.Call, detok: Detokenizer, delta: TokenDelta) -> str:
        call.output.extend(delta.token_ids)
        call.cached = delta.num_cached_tokens
        return detok.push(delta.token_ids)

    def _count(self, call: render.Call, finish_reason: str | None) -> None:
        self.prompt_tokens += len(call.prompt)
        self.generation_tokens += len(call.output)
        self.finished[finish_reason or "abort"] += 1

    def _check_model(self, model: str | None) -> None:
        if model is not None and model != self.model:
            raise FaceError(404, f"The model `{model}` does not exist.", "model")

    def _need_tokenizer(self, param: str) -> Tokenizer:
        if self.tokenizer is None:
            raise FaceError(400, "this server has no tokenizer (start it with --tokenizer): send token ids", param)
        return self.tokenizer

    def _max_tokens(self, limit: int | None, n_prompt: int, kind: render.Kind) -> int:
        """The request's output budget: ``limit``, or what the context leaves; 400 past the context."""
        room, where = self.max_model_len - n_prompt, "prompt" if kind == "completion" else "messages"
        if room < 1:
            raise FaceError(400, f"This model's maximum context length is {self.max_model_len} tokens. However, "
                                 f"your request has {n_prompt} input tokens.", where)
        if limit is not None and limit > room:
            raise FaceError(400, f"'max_tokens' is too large: {limit}. This model's maximum context length is "
                                 f"{self.max_model_len} tokens and your request has {n_prompt} input tokens "
                                 f"({limit} > {self.max_model_len} - {n_prompt}).", "max_tokens")
        return room if limit is None else limit


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (ASGI ``http.disconnect``; uvicorn also sends it once the answer
    is out). The body has been read by then, so nothing else is taken from ``receive``."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _handoff(params: KvTransferParams | None, n_prompt: int) -> KVHandoff | None:
    """The handoff a decode request's ``kv_transfer_params`` name (None unless ``do_remote_prefill``);
    ``remote_num_tokens`` must then be the prompt's length when given (the sim engine checks it)."""
    if params is None or not params.do_remote_prefill:
        return None
    raw = params.model_dump(exclude_none=True)
    return handoff_from_vllm(raw, first_token=-1, num_cached_tokens=0,
                             prompt_tokens=params.remote_num_tokens or 0, lease_deadline=0.0)
