"""The FastAPI app: OpenAI-compatible routes over one ``Frontend`` (``orchestrator.frontend``).

``create_app(Frontend(service), tokenizer)`` builds it; ``orchestrator.api.routes`` has the handlers,
``admission`` the prompt and sampling checks, ``streaming`` the collected and SSE answers, ``errors``
the OpenAI error shapes and how the service's failures map onto status codes.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from orchestrator.api.errors import APIError, api_error_handler, validation_error_handler
from orchestrator.api.routes import Routes
from orchestrator.api.text import Tokenizer
from orchestrator.frontend import Frontend


def create_app(frontend: Frontend, tokenizer: Tokenizer) -> FastAPI:
    """The app serving ``frontend``'s model; ``tokenizer`` is that model's own (prompts are tokenized once)."""
    app = FastAPI(title="pdserve", version="0.1.0")
    app.add_exception_handler(APIError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    routes = Routes(frontend, tokenizer)
    app.add_api_route("/v1/chat/completions", routes.chat, methods=["POST"])
    app.add_api_route("/v1/completions", routes.completions, methods=["POST"])
    app.add_api_route("/v1/models", routes.models, methods=["GET"])
    app.add_api_route("/health", routes.health, methods=["GET"])
    app.add_api_route("/metrics", routes.metrics, methods=["GET"])
    return app
