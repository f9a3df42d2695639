"""The orchestrator's view of a worker pool: each worker's client, health, load and in-flight work.

A ``PoolMonitor`` task per pool polls every worker's load (``GetLoad``) on an interval and marks a
worker unhealthy after ``fail_threshold`` consecutive failures to reach it, or after ``slow_down_s``
of polls that reached it but timed out (a starved host must not empty the pool); healthy again on
the next answer.
For pools whose KV events feed the prefix index, it also keeps one ``StreamKvEvents`` subscription
per worker and hands each batch to ``on_events`` (reconnecting after failures; the first batch after
a reconnect has a sequence gap, which tells the index to resync that worker).

All state is mutated on the orchestrator's event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.errors import WorkerError
from orchestrator.pools.client import WorkerClient
from orchestrator.pools.speed import PrefillSpeed
from protocol.types import EngineLoad, KvEventBatch, WorkerDescription

log = logging.getLogger(__name__)


@dataclass
class WorkerHandle:
    """Mutable state of one worker, owned by its pool. ``draining``: takes no new requests (its in-flight
    ones finish); ``routable`` is what the router may place on. A restarted worker keeps its handle
    (and its id) with a new client (``WorkerPool.rebind``). ``prefill_speed``: its measured prefill speed
    (prefill workers; fed by the request flow from its Prefill RPCs)."""

    client: WorkerClient
    description: WorkerDescription
    healthy: bool = True
    draining: bool = False
    failures: int = 0
    load: EngineLoad = field(default_factory=EngineLoad)
    in_flight: int = 0
    queued_prefill_tokens: int = 0
    handoffs_out: int = 0  # prefill only: handoffs this worker holds that no decode worker has read yet
    slow_since: float = 0.0  # monotonic time of the first unanswered (timed-out) poll in a row
    prefill_speed: PrefillSpeed = field(default_factory=PrefillSpeed)

    @property
    def worker_id(self) -> str:
        return self.client.worker_id

    @property
    def host(self) -> str:
        return self.description.host

    @property
    def routable(self) -> bool:
        return self.healthy and not self.draining


class WorkerPool:
    """Workers of one role; members come and go at runtime (``add``, ``remove``, ``rebind``). Iteration
    order is stable (worker ids sorted) and iterates over a snapshot, so membership may change meanwhile."""

    def __init__(self, role: str, handles: list[WorkerHandle], queue_bound: int) -> None:
        self.role = role
        self.queue_bound = queue_bound
        self._handles: dict[str, WorkerHandle] = {}
        for handle in handles:
            self.add(handle)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._handles.values()))

    def __contains__(self, worker_id: object) -> bool:
        return worker_id in self._handles

    def add(self, handle: WorkerHandle) -> None:
        """Admit ``handle`` (a new worker id; ``ValueError`` if the id is taken)."""
        if handle.worker_id in self._handles:
            raise ValueError(f"worker {handle.worker_id} is already in the {self.role} pool")
        self._handles[handle.worker_id] = handle
        self._handles = dict(sorted(self._handles.items()))

    def remove(self, worker_id: str) -> WorkerHandle:
        """Take ``worker_id`` out of the pool (``KeyError`` if absent); the caller closes its client."""
        return self._handles.pop(worker_id)

    def rebind(self, worker_id: str, client: WorkerClient, description: WorkerDescription) -> WorkerClient:
        """Point ``worker_id``'s handle at a restarted worker: new client and description, healthy, no
        failures, fresh load and prefill speed (it may run elsewhere now). Returns the old client for the
        caller to close."""
        handle = self._handles[worker_id]
        old, handle.client, handle.description = handle.client, client, description
        handle.healthy, handle.failures, handle.slow_since = True, 0, 0.0
        handle.load = EngineLoad()
        handle.prefill_speed = PrefillSpeed()
        return old

    def __len__(self) -> int:
        return len(self._handles)

    def get(self, worker_id: str) -> WorkerHandle:
        return self._handles[worker_id]

    def find(self, worker_id: str) -> WorkerHandle | None:
        """The handle of ``worker_id``, or None once it left the pool."""
        return self._handles.get(worker_id)

    def routable(self) -> list[WorkerHandle]:
        """Healthy workers that take new requests (not draining)."""
        return [h for h in self._handles.values() if h.routable]


EventSink = Callable[[str, KvEventBatch], None]


class PoolMonitor:
    """Background health/load polling and event subscriptions for one pool. ``stop`` cancels all."""

    def __init__(self, pool: WorkerPool, interval_s: float, on_events: EventSink | None = None,
                 on_worker_down: Callable[[str], None] | None = None, fail_threshold: int = 3,
                 poll_timeout_s: float = 5.0, slow_down_s: float = 30.0) -> None:
        self._pool = pool
        self._interval = interval_s
        self._on_events = on_events
        self._on_down = on_worker_down
        self._threshold = fail_threshold
        self._poll_timeout = poll_timeout_s
        self._slow_down_s = slow_down_s
        self._tasks: list[asyncio.Task[None]] = []
        self._event_tasks: dict[str, asyncio.Task[None]] = {}

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._poll_loop(), name=f"poll-{self._pool.role}"))
        for handle in self._pool:
            self.watch(handle)

    def watch(self, handle: WorkerHandle) -> None:
        """Subscribe to a (new) worker's KV events when this pool's events are indexed; polling follows
        the pool's membership by itself. The subscription follows the handle's client across restarts."""
        if self._on_events is not None and handle.worker_id not in self._event_tasks:
            self._event_tasks[handle.worker_id] = asyncio.create_task(
                self._event_loop(handle), name=f"events-{handle.worker_id}")

    async def unwatch(self, worker_id: str) -> None:
        """Stop following a worker that left the pool."""
        task = self._event_tasks.pop(worker_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _poll_one(self, handle: WorkerHandle) -> None:
        try:
            report = await handle.client.load(timeout_s=self._poll_timeout)
        except WorkerError as exc:
            # Unreachable (refused, reset): down after ``fail_threshold`` polls. Merely slow (a starved
            # host, a long engine step): only after ``slow_down_s`` of unanswered polls.
            handle.failures += 1 if not exc.timed_out else 0
            handle.slow_since = handle.slow_since or (time.monotonic() if exc.timed_out else 0.0)
            slow_too_long = handle.slow_since and time.monotonic() - handle.slow_since >= self._slow_down_s
            # Down once per outage: at the poll that crosses the threshold (the flow may have stopped routing
            # to it already, on a refused connection; what its cache held is forgotten here either way).
            crossed = handle.failures == self._threshold or (slow_too_long and handle.healthy)
            if crossed:
                handle.healthy = False
                log.warning("worker %s marked unhealthy", handle.worker_id)
                if self._on_down is not None:
                    self._on_down(handle.worker_id)
            return
        handle.failures = 0
        handle.slow_since = 0.0
        if not handle.healthy:
            log.info("worker %s healthy again", handle.worker_id)
        handle.healthy = True
        handle.load = report.engine

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.gather(*(self._poll_one(h) for h in self._pool))
            await asyncio.sleep(self._interval)

    async def _event_loop(self, handle: WorkerHandle) -> None:
        assert self._on_events is not None
        while True:
            try:
                async for batch in handle.client.kv_events():
                    self._on_events(handle.worker_id, batch)
            except WorkerError as exc:
                log.debug("event stream of %s ended: %s", handle.worker_id, exc)
            except Exception:
                # Never let one bad batch stop indexing this worker for good: resubscribe.
                log.exception("KV event handling for %s failed; resubscribing", handle.worker_id)
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        tasks = self._tasks + list(self._event_tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._event_tasks.clear()
