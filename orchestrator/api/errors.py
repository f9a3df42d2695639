"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}`` with the right status, and
the mapping of the service's failures (``orchestrator.errors``) onto them.

A failure upstream of HTTP becomes: ``NoHealthyWorker`` -> 503 ``no_healthy_worker``; ``WorkerError``
-> 502 ``worker_failed`` (504 ``worker_timeout`` when the worker did not answer in time, 400
``rejected_by_engine`` when the engine refused the request as invalid for it); the request's own deadline
(``TimeoutError``) -> 504 ``worker_timeout``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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
    headers: dict[str, str] | None = None  # e.g. Retry-After on 429 and 503

    def body(self) -> dict[str, dict[str, str | None]]:
        """The OpenAI error object. Text that came from the request is made encodable first (a lone
        surrogate in a field name or a model name is shown escaped, never a failed response)."""
        return {"error": {"message": _printable(self.message), "type": self.type, "param": _printable(self.param),
                          "code": self.code}}


def _printable(text: str | None) -> str | None:
    return None if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, "invalid_request_error", param, code)


def not_found_model(model: str) -> APIError:
    return APIError(404, f"The model `{model}` does not exist.", "invalid_request_error", "model", "model_not_found")


UNAVAILABLE_RETRY_AFTER_S = 2  # a worker that comes back is seen within a few health polls


def unavailable(message: str) -> APIError:
    return APIError(503, message, "service_unavailable", None, "no_healthy_worker",
                    {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)})


def invalid_api_key(missing: bool) -> APIError:
    """401 for a request without a key, or with a key that is not on file (never echoed back)."""
    message = ("You didn't provide an API key. Provide it in an Authorization header using Bearer auth "
               "(Authorization: Bearer YOUR_KEY)." if missing else "Incorrect API key provided.")
    return APIError(401, message, "invalid_request_error", None, "invalid_api_key",
                    {"WWW-Authenticate": "Bearer"})


def admin_required() -> APIError:
    return APIError(403, "This endpoint requires an admin API key.", "permission_error", None,
                    "insufficient_permissions")


def too_many_requests(message: str, retry_after_s: int) -> APIError:
    return APIError(429, message, "requests", None, "rate_limit_exceeded", {"Retry-After": str(retry_after_s)})


def upstream_failed(message: str, timeout: bool = False) -> APIError:
    return APIError(504 if timeout else 502, message, "upstream_error", None,
                    "worker_timeout" if timeout else "worker_failed")


def upstream_error(exc: UpstreamFailure, stage: str, request_timeout_s: float) -> APIError:
    """The error answered for ``exc``, met while ``stage`` (``Prefill`` or ``Decode``) ran."""
    if isinstance(exc, NoHealthyWorker):
        return unavailable(f"No healthy worker can take the request: {exc}")
    if isinstance(exc, WorkerError) and exc.rejected:
        return bad_request(f"The engine refused the request: {exc}", None, "rejected_by_engine")
    if isinstance(exc, WorkerError):
        return upstream_failed(f"{stage} failed: {exc}", exc.timed_out)
    return upstream_failed(f"The request did not finish within server.request_timeout_s ({request_timeout_s:g}s).",
                           True)


def outcome_of(exc: UpstreamFailure) -> Outcome:
    """The outcome a request answered with ``upstream_error(exc, ...)`` is counted under (a worker that
    timed out counts as 502, only the request's own deadline as 504)."""
    if isinstance(exc, NoHealthyWorker):
        return "503"
    if isinstance(exc, WorkerError):
        return "400" if exc.rejected else "502"
    return "504"


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """A body that failed validation: 400, ``param`` the path of the first problem (``max_tokens``,
    ``messages.0.content``), every problem in the message. Unknown fields are named as such."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    param = None
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body" and not str(p).startswith("<")]
        where = ".".join(loc)
        if param is None and loc:
            param = where
        if err.get("type") == "extra_forbidden":
            problems.append(f"Unrecognized request argument supplied: {where}")
        else:
            problems.append(f"{where or 'body'}: {err.get('msg')}")
    message = "; ".join(problems) or "invalid request"
    if any(e.get("type") == "json_invalid" for e in exc.errors()):
        message = f"Invalid JSON body: {message}"
    return JSONResponse(bad_request(message, param).body(), status_code=400)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's and FastAPI's own HTTP errors (unknown path, wrong method, a body that is not valid
    UTF-8 or nests too deeply) in the OpenAI shape."""
    assert isinstance(exc, StarletteHTTPException)
    message = str(exc.detail)
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        message = "Invalid JSON body: the request body is not valid UTF-8."
    elif isinstance(cause, RecursionError):
        message = "Invalid JSON body: it is nested too deeply."
    elif cause is not None and exc.status_code == 400:
        message = f"Invalid JSON body: {type(cause).__name__}"
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    error = APIError(exc.status_code, message, kind, None, _HTTP_CODES.get(exc.status_code))
    return JSONResponse(error.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))


_HTTP_CODES = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
