"""What one request measured (``RequestRecord``) and what one run produced (``RunResult``).

Records hold the raw timeline only; every derived latency (TTFT, TPOT, ITL) is computed from it by the
pure functions in ``bench.metrics``, so the arithmetic can be tested on hand-made timelines.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestRecord:
    """One request.

    Times are seconds. ``sent_s`` is when the request was sent, as an offset from the start of its run;
    ``scheduled_s`` is when the load shape wanted it sent (``None`` in closed loop). ``chunk_times_s`` are
    the arrival times, relative to ``sent_s``, of the stream chunks that carried generated text (a chunk
    may carry several tokens); ``e2e_s`` is the time from sending to the end of the stream.
    Token counts come from the server's ``usage`` chunk and are ``None`` when it sent none.
    """

    request_id: str
    sent_s: float
    chunk_times_s: tuple[float, ...] = ()
    e2e_s: float | None = None
    scheduled_s: float | None = None
    session_id: str | None = None
    turn: int = 0
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    output_tokens: int | None = None
    prefill_worker: str | None = None
    decode_worker: str | None = None
    route_reason: str | None = None
    status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Succeeded: HTTP 200, no error, at least one generated chunk, and a complete stream."""
        return self.error is None and self.status == 200 and bool(self.chunk_times_s) and self.e2e_s is not None


@dataclass(frozen=True)
class LoadPoint:
    """One point of a load sweep: ``kind`` is a ``bench.load`` shape, ``value`` its swept parameter
    (concurrency for ``closed``, requests/s for ``poisson``, burst size for ``burst``, time scale for
    ``trace``)."""

    kind: str
    value: float

    @property
    def label(self) -> str:
        v = int(self.value) if float(self.value).is_integer() else self.value
        return f"{self.kind}={v}"


@dataclass(frozen=True)
class RunKey:
    """Which run: target name, load point, and repeat index (``repeat`` > 0 only with ``--repeats``)."""

    target: str
    load: LoadPoint
    repeat: int = 0


@dataclass(frozen=True)
class RunResult:
    """All records of one run and its wall duration (run start to last completion, seconds).

    ``planned`` is how many requests the run meant to send; fewer records means the run's time
    limit stopped it early (requests never sent have no record).
    """

    key: RunKey
    records: tuple[RequestRecord, ...]
    duration_s: float
    planned: int = 0
