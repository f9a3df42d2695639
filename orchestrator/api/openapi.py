"""The OpenAPI document, made to say what the server answers: a bad body is 400 (not FastAPI's 422),
every error is the OpenAI error object, and the POST routes may answer 404 (another model), 413 (body
too large), 401/429 (keys and admission), 499 (client gone), 502/503/504 (the workers); a 200 is JSON or,
with ``stream: true``, server-sent events."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["error"], "additionalProperties": False,
    "properties": {"error": {
        "type": "object", "required": ["message", "type", "param", "code"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}},
}
_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_POST_ERRORS = {
    "400": "Invalid request: bad JSON, a field of the wrong type or value, an unsupported or unknown field, "
           "a limit (messages, stop strings, prompt characters) or the context length exceeded",
    "401": "No API key, or an unknown one (when API keys are on)",
    "404": "The model is not served here",
    "413": "The request body is larger than limits.max_body_bytes",
    "429": "Past the key's or the deployment's admission limits",
    "502": "A worker failed",
    "503": "No healthy worker can take the request",
    "504": "A worker or the request's deadline timed out",
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _REF}}}


def install(app: FastAPI) -> None:
    """Replace ``app.openapi`` with one that documents the errors the server really answers."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            schemas["ErrorResponse"] = ERROR_SCHEMA
            for item in doc.get("paths", {}).values():
                for method, operation in item.items():
                    responses = operation.setdefault("responses", {})
                    responses.pop("422", None)
                    if method == "post":
                        ok = responses.get("200", {}).setdefault("content", {})
                        ok.setdefault("text/event-stream", {"schema": {"type": "string"}})  # stream: true
                        for status, description in _POST_ERRORS.items():
                            responses.setdefault(status, _error(description))
                        responses.setdefault("499", {"description": "The client left before the answer started"})
            if "/health" in doc.get("paths", {}):
                doc["paths"]["/health"]["get"]["responses"].setdefault(
                    "503", {"description": "Unavailable: nothing can be served",
                            "content": {"application/json": {"schema": {"type": "object"}}}})
            if "/metrics" in doc.get("paths", {}):
                doc["paths"]["/metrics"]["get"]["responses"]["200"] = {
                    "description": "Prometheus text exposition",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
