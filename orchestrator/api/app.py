"""The FastAPI app: OpenAI-compatible routes over one ``Frontend`` (``orchestrator.frontend``).

``create_app(Frontend([(service, membership)]), {model_name: tokenizer})`` builds it;
``orchestrator.api.routes`` has the handlers, ``admission`` the prompt and sampling checks,
``streaming`` the collected and SSE answers, ``errors`` the OpenAI error shapes and how the service's
failures map onto status codes, ``limits`` the bounds on one request (body size, counts, prompt
characters) and the thread pool that tokenizes off the loop.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.api import openapi
from orchestrator.api.admin import AdminRoutes
from orchestrator.api.auth import KeyGuard
from orchestrator.api.errors import APIError, api_error_handler, http_error_handler, validation_error_handler
from orchestrator.api.limits import BodySizeLimit
from orchestrator.api.routes import Routes
from orchestrator.api.text import Tokenizer
from orchestrator.frontend import Frontend


def create_app(frontend: Frontend, tokenizers: Mapping[str, Tokenizer]) -> FastAPI:
    """The app serving ``frontend``'s models; ``tokenizers`` has each model's own, by model name (prompts
    are tokenized once, by the model a request names)."""
    missing = {card.parent or card.name for card in frontend.models} - set(tokenizers)
    if missing:
        raise ValueError(f"no tokenizer for {', '.join(sorted(missing))}")
    app = FastAPI(title="pdserve", version="0.1.0")
    app.add_exception_handler(APIError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_middleware(BodySizeLimit, max_bytes=frontend.limits.max_body_bytes)  # before anything parses a body
    routes = Routes(frontend, tokenizers)
    keys = KeyGuard(frontend)
    keyed = [Depends(keys.require_key)]
    admin = [Depends(keys.require_admin)]
    app.add_api_route("/v1/chat/completions", routes.chat, methods=["POST"], dependencies=keyed)
    app.add_api_route("/v1/completions", routes.completions, methods=["POST"], dependencies=keyed)
    app.add_api_route("/v1/models", routes.models, methods=["GET"], dependencies=keyed)
    app.add_api_route("/health", routes.health, methods=["GET"],
                      dependencies=admin if frontend.auth.protect_health else [])
    app.add_api_route("/metrics", routes.metrics, methods=["GET"],
                      dependencies=admin if frontend.auth.protect_metrics else [])
    ops = AdminRoutes(frontend)
    app.add_api_route("/admin/workers", ops.workers, methods=["GET"], dependencies=admin)
    app.add_api_route("/admin/pools/{pool}/scale", ops.scale, methods=["POST"], dependencies=admin)
    app.add_api_route("/admin/workers/{worker_id}/drain", ops.drain, methods=["POST"], dependencies=admin)
    openapi.install(app)  # documents the 400/413/... errors the server answers, not FastAPI's 422
    return app
