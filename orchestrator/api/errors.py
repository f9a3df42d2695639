"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}`` with the right status, and
the mapping of the service's failures (``orchestrator.errors``) onto them.

A failure upstream of HTTP becomes: ``NoHealthyWorker`` -> 503 ``no_healthy_worker``; ``WorkerError``
-> 502 ``worker_failed`` (504 ``worker_timeout`` when the worker did not answer in time); the request's
own deadline (``TimeoutError``) -> 504 ``worker_timeout``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from orchestrator.errors import NoHealthyWorker, WorkerError
from orchestrator.frontend import Outcome

UpstreamFailure = NoHealthyWorker | WorkerError | TimeoutError


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


def upstream_error(exc: UpstreamFailure, stage: str, request_timeout_s: float) -> APIError:
    """The error answered for ``exc``, met while ``stage`` (``Prefill`` or ``Decode``) ran."""
    if isinstance(exc, NoHealthyWorker):
        return unavailable(f"No healthy worker can take the request: {exc}")
    if isinstance(exc, WorkerError):
        return upstream_failed(f"{stage} failed: {exc}", exc.timed_out)
    return upstream_failed(f"The request did not finish within server.request_timeout_s ({request_timeout_s:g}s).",
                           True)


def outcome_of(exc: UpstreamFailure) -> Outcome:
    """The outcome a request answered with ``upstream_error(exc, ...)`` is counted under (a worker that
    timed out counts as 502, only the request's own deadline as 504)."""
    if isinstance(exc, NoHealthyWorker):
        return "503"
    return "502" if isinstance(exc, WorkerError) else "504"


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
