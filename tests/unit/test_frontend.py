"""The front end's narrow interface, pure parts: the health summary and how the service's failures map
onto HTTP errors and request outcomes."""

from __future__ import annotations

import pytest

from orchestrator.api.errors import outcome_of, upstream_error
from orchestrator.errors import NoHealthyWorker, WorkerError
from orchestrator.frontend import WorkerHealth, summarize_health

UP, DOWN = WorkerHealth("w-up", True), WorkerHealth("w-down", False)
HEALTH_TABLE = [
    # (case, prefill workers (None: colocated), decode workers, local fallback, status)
    ("all up", [UP], [UP], True, "ok"),
    ("colocated, all up", None, [UP, UP], False, "ok"),
    ("colocated, one of two down", None, [UP, DOWN], False, "degraded"),
    ("one prefill of two down", [UP, DOWN], [UP], False, "degraded"),
    ("one decode of two down", [UP], [DOWN, UP], False, "degraded"),
    ("no prefill answers, local fallback", [DOWN], [UP], True, "degraded"),
    ("no prefill answers, no fallback", [DOWN], [UP], False, "unavailable"),
    ("no decode answers", [UP], [DOWN], True, "unavailable"),
    ("colocated, nothing answers", None, [DOWN], True, "unavailable"),
]


@pytest.mark.parametrize(("case", "prefill", "decode", "fallback", "status"), HEALTH_TABLE,
                         ids=[row[0] for row in HEALTH_TABLE])
def test_health_summary(case: str, prefill: list[WorkerHealth] | None, decode: list[WorkerHealth],
                        fallback: bool, status: str) -> None:
    report = summarize_health(prefill, decode, fallback)
    assert report.status == status
    assert report.serving == (status != "unavailable")
    assert report.prefill == tuple(prefill or ()) and report.decode == tuple(decode)
    counts = report.counts()
    assert counts["decode"] == {"healthy": sum(w.healthy for w in decode), "total": len(decode)}
    if prefill is None:
        assert "prefill" not in counts
    else:
        assert counts["prefill"] == {"healthy": sum(w.healthy for w in prefill), "total": len(prefill)}


FAILURE_TABLE = [
    # (case, exception, HTTP status, error code, outcome label, words in the message)
    ("no healthy worker", NoHealthyWorker("no healthy decode worker"), 503, "no_healthy_worker", "503",
     "No healthy worker can take the request: no healthy decode worker"),
    ("worker failed", WorkerError("p-0", "UNAVAILABLE: gone"), 502, "worker_failed", "502",
     "Prefill failed: worker p-0: UNAVAILABLE: gone"),
    ("worker timed out", WorkerError("p-0", "prefill timed out after 2s", timed_out=True), 504, "worker_timeout",
     "502", "Prefill failed: worker p-0: prefill timed out"),
    ("request deadline", TimeoutError(), 504, "worker_timeout", "504", "server.request_timeout_s (7.5s)"),
]


@pytest.mark.parametrize(("case", "exc", "status", "code", "outcome", "message"), FAILURE_TABLE,
                         ids=[row[0] for row in FAILURE_TABLE])
def test_upstream_failures_map_to_openai_errors(case: str, exc: Exception, status: int, code: str, outcome: str,
                                                message: str) -> None:
    error = upstream_error(exc, "Prefill", 7.5)  # type: ignore[arg-type]
    assert (error.status, error.code) == (status, code)
    assert message in error.message
    assert outcome_of(exc) == outcome  # type: ignore[arg-type]
