"""The run loop (bench.runner) against an in-process fake ``send`` (no HTTP)."""

from __future__ import annotations

import asyncio
import time

import pytest

from bench.load import make_shape
from bench.record import LoadPoint, RequestRecord, RunKey
from bench.runner import RunLimits, run
from bench.spec import RequestSpec

KEY = RunKey("t", LoadPoint("closed", 2))


class FakeSend:
    """Answers after ``delay`` seconds; tracks concurrency and send/finish times per request."""

    def __init__(self, delay: float = 0.02, hang: frozenset[str] = frozenset()) -> None:
        self.delay, self.hang = delay, hang
        self.inflight = self.peak = 0
        self.sent: dict[str, float] = {}
        self.done: dict[str, float] = {}

    async def __call__(self, spec: RequestSpec, start: float) -> RequestRecord:
        now = time.perf_counter()
        self.sent[spec.request_id] = now
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        try:
            await asyncio.sleep(3600 if spec.request_id in self.hang else self.delay)
        finally:
            self.inflight -= 1
        self.done[spec.request_id] = time.perf_counter()
        return RequestRecord(
            spec.request_id, now - start, (self.delay,), self.delay, spec.arrival_s, spec.session_id, spec.turn,
            status=200,
        )  # fmt: skip


def specs(n: int, session: str | None = None) -> list[RequestSpec]:
    return [RequestSpec(f"r{i}", 4, prompt="p", session_id=session, turn=i if session else 0) for i in range(n)]


async def test_closed_loop_keeps_concurrency_and_sends_everything_once() -> None:
    send = FakeSend()
    result = await run(KEY, specs(9), send, concurrency=3, limits=RunLimits(), progress=False)
    assert send.peak == 3
    assert sorted(r.request_id for r in result.records) == sorted(f"r{i}" for i in range(9))
    assert all(r.ok for r in result.records) and result.planned == 9
    assert 0.05 <= result.duration_s < 1.0  # 3 waves of 20 ms


async def test_turns_of_a_session_are_sequential_even_with_spare_concurrency() -> None:
    send = FakeSend(delay=0.03)
    await run(KEY, specs(3, session="s"), send, concurrency=3, limits=RunLimits(), progress=False)
    assert send.peak == 1
    assert send.sent["r1"] >= send.done["r0"] and send.sent["r2"] >= send.done["r1"]


async def test_open_loop_sends_at_the_arrival_times() -> None:
    timed = make_shape("burst").arrivals(specs(4), 2, 0)  # 2 now, 2 after 1 s ... scaled below
    timed = [s.with_arrival((s.arrival_s or 0) * 0.15) for s in timed]
    send = FakeSend(delay=0.01)
    result = await run(KEY, timed, send, concurrency=None, limits=RunLimits(), progress=False)
    by_id = {r.request_id: r for r in result.records}
    assert by_id["r0"].sent_s < 0.05 and by_id["r1"].sent_s < 0.05
    assert 0.15 <= by_id["r2"].sent_s < 0.25 and by_id["r2"].scheduled_s == pytest.approx(0.15)
    assert send.peak == 2


async def test_open_loop_stops_sending_at_the_time_limit() -> None:
    timed = [s.with_arrival(i * 0.1) for i, s in enumerate(specs(50))]
    result = await run(
        KEY, timed, FakeSend(0.01), concurrency=None, limits=RunLimits(max_duration_s=0.25), progress=False
    )
    assert 2 <= len(result.records) <= 4 and result.planned == 50
    assert result.duration_s < 0.5


async def test_hung_requests_are_cancelled_and_recorded() -> None:
    began = time.perf_counter()
    limits = RunLimits(max_duration_s=0.1, timeout_s=0.1)
    result = await run(
        KEY, specs(3), FakeSend(0.01, hang=frozenset({"r1"})), concurrency=3, limits=limits, progress=False
    )
    assert time.perf_counter() - began < 1.0
    by_id = {r.request_id: r for r in result.records}
    assert by_id["r0"].ok and by_id["r2"].ok
    assert not by_id["r1"].ok and "time limit" in (by_id["r1"].error or "")


async def test_a_send_that_raises_becomes_an_error_record() -> None:
    async def broken(spec: RequestSpec, start: float) -> RequestRecord:
        raise RuntimeError("bug")

    result = await run(KEY, specs(2), broken, concurrency=1, limits=RunLimits(), progress=False)
    assert [r.error for r in result.records] == ["RuntimeError: bug"] * 2
