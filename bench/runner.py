"""One run: one target, one load point, one list of specs -> ``RunResult``.

Bounds (every run stops by itself):
* count: exactly the specs given, each sent at most once;
* time: no request is sent after ``max_duration_s``; every request is bounded by ``timeout_s``; at
  ``max_duration_s + timeout_s`` whatever is still running is cancelled and recorded as an error;
* width: at most ``max_inflight`` requests in flight in open loop (closed loop: the concurrency).

Sessions: a turn is sent only after the previous dispatched turn of its session has finished (its
``sent_s`` is then later than its ``scheduled_s``). Dispatch follows list order, which the workloads and
load shapes keep consistent with turn order and arrival order.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from bench.record import RequestRecord, RunKey, RunResult
from bench.spec import RequestSpec

SendFn = Callable[[RequestSpec, float], Awaitable[RequestRecord]]
"""``send(spec, run_start)``: sends one request; returns its record and never raises (but may be cancelled)."""


@dataclass(frozen=True)
class RunLimits:
    max_duration_s: float = 600.0
    timeout_s: float = 120.0
    max_inflight: int = 1024


async def _one(
    send: SendFn, spec: RequestSpec, start: float, last_turns: dict[str, asyncio.Future[None]]
) -> RequestRecord:
    """Send ``spec`` once the turn dispatched before it in its session (``last_turns``) has finished."""
    if spec.session_id is None:
        return await send(spec, start)
    prev = last_turns.get(spec.session_id)
    mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    last_turns[spec.session_id] = mine
    try:
        if prev is not None:
            await asyncio.shield(prev)
        return await send(spec, start)
    finally:
        mine.set_result(None)


def _outcome(
    task: asyncio.Task[RequestRecord], spec: RequestSpec, start: float, clock: Callable[[], float]
) -> RequestRecord:
    """The task's record, or an error record when it was cancelled or its send raised."""
    if task.cancelled():
        error = "cancelled at the run's time limit"
    elif (exc := task.exception()) is not None:  # a send that broke its contract; keep the run going
        error = f"{type(exc).__name__}: {exc}"
    else:
        return task.result()
    return RequestRecord(
        request_id=spec.request_id,
        sent_s=clock() - start,
        scheduled_s=spec.arrival_s,
        session_id=spec.session_id,
        turn=spec.turn,
        error=error,
    )


async def run(
    key: RunKey,
    specs: Sequence[RequestSpec],
    send: SendFn,
    *,
    concurrency: int | None,
    limits: RunLimits,
    progress: bool = True,
    clock: Callable[[], float] = time.perf_counter,
) -> RunResult:
    """Run ``specs`` closed-loop with ``concurrency`` workers, or open-loop at their ``arrival_s`` when
    ``concurrency`` is ``None``. Records are returned in completion order."""
    last_turns: dict[str, asyncio.Future[None]] = {}
    start = clock()
    deadline = start + limits.max_duration_s
    bar = tqdm(total=len(specs), desc=f"{key.target} {key.load.label}", file=sys.stderr, disable=not progress)
    tasks: dict[asyncio.Task[RequestRecord], RequestSpec] = {}

    def launch(spec: RequestSpec) -> asyncio.Task[RequestRecord]:
        task = asyncio.create_task(_one(send, spec, start, last_turns))
        tasks[task] = spec
        task.add_done_callback(lambda _t: bar.update(1))
        return task

    async def closed_worker(queue: deque[RequestSpec]) -> None:
        while queue and clock() < deadline:
            await asyncio.wait({launch(queue.popleft())})

    async def open_dispatcher() -> None:
        gate = asyncio.Semaphore(limits.max_inflight)
        for spec in specs:
            due = start + (spec.arrival_s or 0.0)
            if due >= deadline:
                return
            if due > clock():
                await asyncio.sleep(due - clock())
            await gate.acquire()
            launch(spec).add_done_callback(lambda _t: gate.release())

    dispatch: asyncio.Future[Any]
    if concurrency is not None:
        queue = deque(specs)
        dispatch = asyncio.gather(*(closed_worker(queue) for _ in range(max(1, concurrency))))
    else:
        dispatch = asyncio.ensure_future(open_dispatcher())
    try:
        # The dispatcher stops by the deadline; the grace period lets in-flight requests finish.
        await asyncio.wait({dispatch}, timeout=max(0.0, deadline - clock()) + limits.timeout_s)
        if not dispatch.done():
            dispatch.cancel()
        pending = {t for t in tasks if not t.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=max(0.0, deadline + limits.timeout_s - clock()))
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        bar.close()
    records = [_outcome(t, spec, start, clock) for t, spec in tasks.items()]
    duration = clock() - start
    records.sort(key=lambda r: r.sent_s + (r.e2e_s or 0.0))
    return RunResult(key=key, records=tuple(records), duration_s=duration, planned=len(specs))
