"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}`` with the right status."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


@dataclass
class APIError(Exception):
    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None

    def body(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, "invalid_request_error", param, code)


def not_found_model(model: str) -> APIError:
    return APIError(404, f"The model `{model}` does not exist.", "invalid_request_error", "model", "model_not_found")


def unavailable(message: str) -> APIError:
    return APIError(503, message, "service_unavailable", None, "no_healthy_worker")


def upstream_failed(message: str, timeout: bool = False) -> APIError:
    return APIError(504 if timeout else 502, message, "upstream_error", None,
                    "worker_timeout" if timeout else "worker_failed")


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return JSONResponse(exc.body(), status_code=exc.status)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    param = None
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        if param is None and loc:
            param = ".".join(loc)
        problems.append(f"{'.'.join(loc) or 'body'}: {err.get('msg')}")
    message = "; ".join(problems) or "invalid request"
    if any(e.get("type") == "json_invalid" for e in exc.errors()):
        message = f"Invalid JSON body: {message}"
    return JSONResponse(bad_request(message, param).body(), status_code=400)
