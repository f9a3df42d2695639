"""Launchers start the planned worker processes and stop them. Two, registered by name:

- ``ray``: each process is owned by a Ray actor that asks for the pool's resources (GPUs per replica
  on a GPU cluster, none on CPU). Connects to a cluster when an address is given (or ``RAY_ADDRESS``
  is set, as under ``ray job submit``); otherwise starts an embedded single-node Ray on 127.0.0.1.
- ``local``: plain child processes of the orchestrator, no Ray (tests, quick experiments).

A worker process dies with its owner (``PR_SET_PDEATHSIG`` in ``worker.main``), and ``stop`` ends
each process group explicitly, so neither pdserve nor vLLM processes are left behind.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from orchestrator.launch.plan import ProcessPlan
from orchestrator.launch.process import WorkerEndpoint, WorkerProcess

log = logging.getLogger(__name__)


class Launcher(Protocol):
    def start(self, plans: list[ProcessPlan], timeout_s: float) -> list[WorkerEndpoint]: ...

    def stop(self) -> None: ...


class LocalLauncher:
    """Worker processes as direct children. ``stop`` is idempotent."""

    def __init__(self, address: str | None = None, namespace: str = "pdserve", num_cpus: int | None = None) -> None:
        self._procs: list[WorkerProcess] = []

    def start(self, plans: list[ProcessPlan], timeout_s: float) -> list[WorkerEndpoint]:
        self._procs = [WorkerProcess(p.name, p.workers) for p in plans]
        try:
            for proc in self._procs:
                proc.spawn()  # from this (long-lived) thread: see WorkerProcess.spawn
            results = [proc.wait_ready(timeout_s) for proc in self._procs]
        except Exception:
            self.stop()
            raise
        return [endpoint for group in results for endpoint in group]

    def stop(self) -> None:
        procs, self._procs = self._procs, []
        with ThreadPoolExecutor(max_workers=max(1, len(procs))) as pool:
            list(pool.map(lambda proc: proc.stop(), procs))


class _WorkerHost:
    """Ray actor body: owns one ``WorkerProcess``. Sync actor, so Popen runs on its main thread and
    the child's parent-death signal is tied to the actor process itself."""

    def __init__(self, name: str, specs_json: list[str]) -> None:
        from protocol.launch import WorkerLaunchSpec

        self._proc = WorkerProcess(name, tuple(WorkerLaunchSpec.from_json(s) for s in specs_json))

    def start(self, timeout_s: float) -> list[tuple[str, str, str, int]]:
        return [(e.worker_id, e.role, e.address, e.pid) for e in self._proc.start(timeout_s)]

    def stop(self) -> bool:
        self._proc.stop()
        return True


class RayLauncher:
    """Pools as Ray actors. Owns the Ray connection it opened; ``stop`` kills actors then disconnects."""

    def __init__(self, address: str | None = None, namespace: str = "pdserve", num_cpus: int | None = None) -> None:
        import ray

        self._ray = ray
        self._actors: list[Any] = []
        address = address or os.environ.get("RAY_ADDRESS") or None
        if not ray.is_initialized():
            if address:
                ray.init(address=address, namespace=namespace, log_to_driver=False)
            else:
                # Embedded single-node Ray, loopback only.
                os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
                # address="local": always a new instance, never a stale cluster found on disk.
                ray.init(address="local", namespace=namespace, include_dashboard=False,
                         _node_ip_address="127.0.0.1",
                         num_cpus=num_cpus, log_to_driver=False)
        self._host_cls: Any = ray.remote(_WorkerHost)

    def start(self, plans: list[ProcessPlan], timeout_s: float) -> list[WorkerEndpoint]:
        ray = self._ray
        futures = []
        for plan in plans:
            options: dict[str, Any] = {"num_cpus": plan.resources.num_cpus, "num_gpus": plan.resources.num_gpus,
                                       "name": None, "max_concurrency": 1}
            if plan.resources.memory_gb:
                options["memory"] = int(plan.resources.memory_gb * (1 << 30))
            actor = self._host_cls.options(**options).remote(plan.name, [w.to_json() for w in plan.workers])
            self._actors.append(actor)
            futures.append(actor.start.remote(timeout_s))
        try:
            groups = ray.get(futures, timeout=timeout_s + 60)
        except Exception:
            self.stop()
            raise
        return [WorkerEndpoint(worker_id=w, role=r, address=a, pid=p) for group in groups for (w, r, a, p) in group]

    def stop(self) -> None:
        ray = self._ray
        actors, self._actors = self._actors, []
        if actors:
            try:
                ray.get([a.stop.remote() for a in actors], timeout=60)
            except Exception:
                log.exception("stopping worker hosts failed; killing the actors")
            for actor in actors:
                try:
                    ray.kill(actor)
                except Exception:
                    log.debug("actor already gone", exc_info=True)


LAUNCHERS: dict[str, Callable[..., Launcher]] = {"ray": RayLauncher, "local": LocalLauncher}
