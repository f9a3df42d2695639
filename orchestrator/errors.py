"""The errors a request can meet on its way through the pools; the HTTP layer maps them to status codes.

Raised by the gRPC client (``orchestrator.pools.client``) and the request flow, caught by the front end.
They live here so that the front end never imports the gRPC client.
"""

from __future__ import annotations


class WorkerError(RuntimeError):
    """A worker call failed or timed out. ``retryable`` is False for errors the request caused;
    ``timed_out`` is True when the worker did not answer in time (HTTP 504 rather than 502);
    ``void_reason`` is set when a decode worker could not read the request's KV handoff (``lease_expired``,
    ``source_gone``, ``load_failed``): it produced nothing, and the request may be prefilled again;
    ``rejected`` when the engine refused the request itself (invalid for it: an HTTP 400, not a 5xx);
    ``unreachable`` when the worker could not be reached at all (its process is gone or not listening)."""

    def __init__(self, worker_id: str, message: str, retryable: bool = True, timed_out: bool = False,
                 void_reason: str | None = None, rejected: bool = False, unreachable: bool = False) -> None:
        self.worker_id = worker_id
        self.unreachable = unreachable
        self.retryable = retryable
        self.timed_out = timed_out
        self.void_reason = void_reason
        self.rejected = rejected
        super().__init__(f"worker {worker_id}: {message}")


class NoHealthyWorker(RuntimeError):
    """A pool has no worker that can take the request (HTTP 503)."""
