"""Live membership: workers restarted when their process dies, pools scaled and workers drained at runtime.

``Membership`` owns the registry (``orchestrator.membership.registry``) and drives the launcher that
started the workers (``orchestrator.launch``) and the service's pools (``Service.join``/``rejoin``/
``leave``). It runs on the orchestrator's event loop; launcher calls block, so they run in threads.

- **Supervision.** Every ``interval_s`` it asks the launcher whether each worker process lives. A dead
  one's workers are marked down at once (no new requests; the prefix index forgets their caches) and the
  process is restarted with the same specs: its workers come back with the same ids at new addresses and
  rejoin their pools. A failed restart is retried with backoff (1 s doubling to 30 s).
- **Scaling.** ``scale(pool, n)`` starts new workers (new ids, never reused) or drains the surplus,
  highest index first (down workers before healthy ones). It returns at once with what it will do; the
  work runs in the background and the registry shows its progress.
- **Draining.** ``drain(worker)``: the worker takes no new requests; once nothing is in flight on it (or
  after ``drain_timeout_s``) it leaves its pool, and its process stops when none of its workers remain.

Without a launcher (workers started by someone else) it still lists and drains, but cannot restart or
scale (``MembershipError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from orchestrator.config import PdserveConfig
from orchestrator.launch.launchers import Launcher
from orchestrator.launch.plan import ProcessPlan, plan_workers
from orchestrator.launch.process import WorkerEndpoint
from orchestrator.membership.registry import Member, MemberView, Registry, state_of
from orchestrator.pools.pool import WorkerHandle
from orchestrator.service import Service

log = logging.getLogger(__name__)
_MAX_BACKOFF_S = 30.0


class MembershipError(RuntimeError):
    """A membership request that cannot be carried out: ``status`` is the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ScaleOrder:
    """What ``scale`` set in motion: workers being added and workers being drained."""

    pool: str
    replicas: int
    adding: tuple[str, ...]
    draining: tuple[str, ...]


class Membership:
    def __init__(self, service: Service, launcher: Launcher | None, *, run_id: str = "",
                 plans: Sequence[ProcessPlan] = (), endpoints: Sequence[WorkerEndpoint] = (),
                 interval_s: float = 1.0, drain_timeout_s: float | None = None) -> None:
        self._service = service
        self._config: PdserveConfig = service.config
        self._launcher = launcher
        self._run_id = run_id
        self._interval = interval_s
        self._drain_timeout = drain_timeout_s or service.config.server.request_timeout_s
        self._processes: dict[str, ProcessPlan] = {p.name: p for p in plans}
        self.registry = Registry()
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy: set[str] = set()  # processes being restarted or stopped
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        if not endpoints:  # workers someone else started: as the pools know them
            endpoints = [WorkerEndpoint(worker_id=h.worker_id, role=h.description.role, address=h.client.address,
                                        pid=0, node=h.host) for name in ("prefill", "decode")
                         for h in (service.pool(name) if name == "decode" or service.prefill else ())]
        for endpoint in endpoints:
            member = Member(worker_id=endpoint.worker_id, role=endpoint.role, pool=self._pool_of(endpoint.role),
                            process=endpoint.process, phase="running")
            self._record(member, endpoint)
            self.registry.add(member)

    # -- reading -------------------------------------------------------------------------------------
    def _pool_of(self, role: str) -> str:
        return "prefill" if role == "prefill" else "decode"

    def _role_of(self, pool: str) -> str:
        if pool not in ("prefill", "decode") or (pool == "prefill" and self._config.colocated):
            raise MembershipError(f"no pool {pool!r} in this deployment (pools: "
                                  f"{'decode' if self._config.colocated else 'prefill, decode'})", 404)
        return "both" if self._config.colocated else pool

    def _handle(self, member: Member) -> WorkerHandle | None:
        return self._service.pool(member.pool).find(member.worker_id)

    def knows(self, worker_id: str) -> bool:
        """True when ``worker_id`` is a member (of this model's pools)."""
        return worker_id in self.registry.members

    def views(self) -> list[MemberView]:
        """Every member, prefill pool first, by index."""
        out = []
        for pool in ("prefill", "decode"):
            for m in self.registry.of_pool(pool):
                handle = self._handle(m)
                state = state_of(m, handle.healthy if handle else None)
                out.append(MemberView(m.worker_id, self._config.model.name, m.role, m.pool, state,
                                      m.node, m.address, m.side_channel, m.pid, m.process, m.restarts,
                                      handle.in_flight if handle else 0, m.last_error))
        return out

    def update_gauges(self) -> None:
        """``pdserve_pool_workers{pool,state}`` from the registry."""
        counts = {(pool, state): 0 for pool in ("prefill", "decode")
                  for state in ("starting", "healthy", "draining", "down")}
        for view in self.views():
            counts[(view.pool, view.state)] += 1
        for (pool, state), n in counts.items():
            self._service.metrics.pool_workers.labels(pool, state).set(n)

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._launcher is not None and self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise(), name="membership-supervisor")

    async def close(self) -> None:
        self._closing = True
        tasks = [t for t in (self._supervisor, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _spawn(self, make: Callable[[], Awaitable[None]], name: str) -> None:
        async def run() -> None:
            try:
                await make()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed", name)

        task = asyncio.create_task(run(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _record(self, member: Member, endpoint: WorkerEndpoint) -> None:
        member.node, member.address, member.pid = endpoint.node, endpoint.address, endpoint.pid
        member.side_channel, member.process = endpoint.side_channel, endpoint.process or member.process

    # -- supervision ---------------------------------------------------------------------------------
    async def _supervise(self) -> None:
        assert self._launcher is not None
        launcher = self._launcher
        while not self._closing:
            await asyncio.sleep(self._interval)
            names = [n for n in self._processes if n not in self._busy and any(
                m.phase in ("running", "draining") for m in self.registry.of_process(n))]
            alive = await asyncio.gather(*(asyncio.to_thread(launcher.alive, n) for n in names))
            for name, ok in zip(names, alive, strict=True):
                if not ok and name not in self._busy and not self._closing:
                    self._busy.add(name)
                    self._spawn(lambda name=name: self._revive(name), f"revive-{name}")  # type: ignore[misc]

    async def _revive(self, process: str) -> None:
        """A process died: mark its workers down, then restart it (or, if all its workers were draining,
        let them go)."""
        assert self._launcher is not None
        try:
            members = self.registry.of_process(process)
            for m in members:
                handle = self._handle(m)
                if handle is not None:
                    handle.healthy = False
                self._service.forget(m.worker_id)
            log.warning("worker process %s died (%s)", process, ", ".join(m.worker_id for m in members))
            if all(m.phase == "draining" for m in members):
                for m in members:
                    await self._remove(m)
                return
            for m in members:
                m.phase = "restarting"
            await self._restart(process)
        finally:
            self._busy.discard(process)

    async def _restart(self, process: str) -> None:
        assert self._launcher is not None
        delay = 1.0
        timeout = self._config.server.worker_start_timeout_s
        while not self._closing:
            try:
                endpoints = await asyncio.to_thread(self._launcher.restart, process, timeout)
                for endpoint in endpoints:
                    member = self.registry.members[endpoint.worker_id]
                    await self._service.rejoin(endpoint, member.pool)
                    self._record(member, endpoint)
                    member.restarts += 1
                    member.last_error = ""
                    member.phase = "running"
                    self._service.metrics.worker_restarts.labels(member.worker_id).inc()
                    log.info("worker %s is back at %s", member.worker_id, member.address)
                return
            except Exception as exc:
                for m in self.registry.of_process(process):
                    m.last_error = f"restart failed: {exc}"[:500]
                log.warning("restarting %s failed (%s); again in %.0f s", process, exc, delay)
                await asyncio.sleep(delay)
                delay = min(_MAX_BACKOFF_S, delay * 2)

    # -- scaling and draining ------------------------------------------------------------------------
    def scale(self, pool: str, replicas: int) -> ScaleOrder:
        """Grow or shrink ``pool`` to ``replicas`` workers that take requests (draining ones excluded).
        Raises ``MembershipError`` (404 unknown pool, 400 bad count, 409 without a launcher)."""
        role = self._role_of(pool)
        if replicas < 0 or (pool == "decode" and replicas < 1):
            raise MembershipError(f"{pool} needs {'at least 1' if pool == 'decode' else 'a non-negative count of'} "
                                  f"replicas, got {replicas}", 400)
        if self._launcher is None:
            raise MembershipError("this server did not launch its workers; it cannot scale them")
        active = [m for m in self.registry.of_pool(pool) if m.phase != "draining"]
        if replicas > len(active):
            indices = self.registry.take_indices(role, replicas - len(active))
            plans = plan_workers(self._config, role, indices, self._run_id)
            added = []
            for plan in plans:
                for spec in plan.workers:
                    member = Member(worker_id=spec.worker_id, role=role, pool=pool, process=plan.name)
                    self.registry.add(member)
                    added.append(member.worker_id)
                self._spawn(lambda plan=plan: self._add(plan), f"add-{plan.name}")  # type: ignore[misc]
            return ScaleOrder(pool, replicas, tuple(added), ())
        # Shrink: down or still-starting workers first, then the newest.
        def keep_first(m: Member) -> tuple[int, int]:
            handle = self._handle(m)
            return (1 if handle is not None and handle.healthy else 0, -int(m.worker_id.rsplit("-", 1)[1]))
        victims = sorted(active, key=keep_first)[:len(active) - replicas]
        for m in victims:
            self._start_drain(m)
        return ScaleOrder(pool, replicas, (), tuple(m.worker_id for m in victims))

    async def _add(self, plan: ProcessPlan) -> None:
        assert self._launcher is not None
        self._processes[plan.name] = plan
        self._busy.add(plan.name)
        try:
            timeout = self._config.server.worker_start_timeout_s
            endpoints = await asyncio.to_thread(self._launcher.start, [plan], timeout)
            for endpoint in endpoints:
                member = self.registry.members[endpoint.worker_id]
                await self._service.join(endpoint, member.pool)
                self._record(member, endpoint)
                member.phase = "running"
                log.info("worker %s joined %s at %s", member.worker_id, member.pool, member.address)
        except Exception as exc:
            log.warning("starting %s failed: %s", plan.name, exc)
            for spec in plan.workers:
                self.registry.remove(spec.worker_id)
            self._processes.pop(plan.name, None)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._launcher.stop_process, plan.name)
            raise
        finally:
            self._busy.discard(plan.name)

    def drain(self, worker_id: str) -> MemberView:
        """Stop sending ``worker_id`` new requests and retire it once idle. Raises ``MembershipError``
        (404 unknown worker, 409 while it is starting)."""
        member = self.registry.members.get(worker_id)
        if member is None:
            raise MembershipError(f"no worker {worker_id!r}", 404)
        if member.phase == "starting":
            raise MembershipError(f"worker {worker_id} is still starting; drain it once it serves")
        self._start_drain(member)
        return next(v for v in self.views() if v.worker_id == worker_id)

    def _start_drain(self, member: Member) -> None:
        if member.phase == "draining":
            return
        handle = self._handle(member)
        if handle is not None:
            handle.draining = True
        member.phase = "draining"
        self._spawn(lambda: self._finish_drain(member), f"drain-{member.worker_id}")

    async def _finish_drain(self, member: Member) -> None:
        deadline = time.monotonic() + self._drain_timeout
        while time.monotonic() < deadline and member.worker_id in self.registry.members:
            handle = self._handle(member)
            if handle is None or (handle.in_flight == 0 and handle.handoffs_out == 0):
                break
            await asyncio.sleep(0.1)
        if member.worker_id in self.registry.members:
            await self._remove(member)

    async def _remove(self, member: Member) -> None:
        """``member`` leaves its pool and the registry; its process stops once it hosts no member."""
        self.registry.remove(member.worker_id)
        if member.worker_id in self._service.pool(member.pool):
            await self._service.leave(member.worker_id, member.pool)
        log.info("worker %s left %s", member.worker_id, member.pool)
        if not self.registry.of_process(member.process) and self._launcher is not None:
            self._processes.pop(member.process, None)
            self._busy.add(member.process)
            try:
                await asyncio.to_thread(self._launcher.stop_process, member.process)
            finally:
                self._busy.discard(member.process)
