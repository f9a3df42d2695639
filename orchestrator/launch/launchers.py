"""Launchers start the planned worker processes and stop them. Two, registered by name:

- ``ray``: each process is owned by a Ray actor that asks for the pool's resources (GPUs per replica
  on a GPU cluster, none on CPU). Connects to a cluster when an address is given (or ``RAY_ADDRESS``
  is set, as under ``ray job submit``); otherwise starts an embedded single-node Ray on 127.0.0.1.
- ``local``: plain child processes of the orchestrator, no Ray (tests, quick experiments).

A worker process dies with its owner (``PR_SET_PDEATHSIG`` in ``worker.main``), and ``stop`` ends
each process group explicitly, so neither pdserve nor vLLM processes are left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from orchestrator.config import Resources
from orchestrator.launch.plan import ProcessPlan
from orchestrator.launch.process import WorkerEndpoint, WorkerProcess

log = logging.getLogger(__name__)


class Launcher(Protocol):
    """Starts and stops worker processes, one plan (``ProcessPlan.name``) at a time or all together.
    Every method blocks; the orchestrator calls them off its event loop. ``start`` adds processes to
    those the launcher owns; ``restart`` starts a dead (or live) one again with the same specs, its
    workers at new ports; ``alive`` is False for an unknown name."""

    def start(self, plans: list[ProcessPlan], timeout_s: float) -> list[WorkerEndpoint]: ...

    def alive(self, name: str) -> bool: ...

    def restart(self, name: str, timeout_s: float) -> list[WorkerEndpoint]: ...

    def stop_process(self, name: str) -> None: ...

    def stop(self) -> None: ...


class LocalLauncher:
    """Worker processes as direct children, forked from one thread of the launcher's own that lives as
    long as the launcher (a child's parent-death signal fires when its forking thread exits). ``stop``
    is idempotent."""

    def __init__(self, address: str | None = None, namespace: str = "pdserve", num_cpus: int | None = None) -> None:
        self._procs: dict[str, WorkerProcess] = {}
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdserve-spawn")

    def start(self, plans: list[ProcessPlan], timeout_s: float) -> list[WorkerEndpoint]:
        procs = [WorkerProcess(p.name, p.workers) for p in plans]
        self._procs.update({proc.name: proc for proc in procs})
        try:
            for proc in procs:
                self._spawner.submit(proc.spawn).result()
            results = [proc.wait_ready(timeout_s) for proc in procs]
        except Exception:
            for proc in procs:
                self.stop_process(proc.name)
            raise
        return [endpoint for group in results for endpoint in group]

    def alive(self, name: str) -> bool:
        proc = self._procs.get(name)
        return proc is not None and proc.alive()

    def restart(self, name: str, timeout_s: float) -> list[WorkerEndpoint]:
        proc = self._procs[name]
        proc.stop(grace_s=5.0)
        self._spawner.submit(proc.spawn).result()
        return proc.wait_ready(timeout_s)

    def stop_process(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is not None:
            proc.stop()

    def stop(self) -> None:
        procs, self._procs = list(self._procs.values()), {}
        with ThreadPoolExecutor(max_workers=max(1, len(procs))) as pool:
            list(pool.map(lambda proc: proc.stop(), procs))
        self._spawner.shutdown(wait=False)


class _WorkerHost:
    """Ray actor body: owns one ``WorkerProcess``. Sync actor, so Popen runs on its main thread and
    the child's parent-death signal is tied to the actor process itself. The worker learns its node's
    address (``PDSERVE_NODE_IP``): ``node_ip`` when the launcher names one, else Ray's for the node."""

    def __init__(self, name: str, specs_json: list[str], node_ip: str | None = None) -> None:
        import ray

        from protocol.launch import WorkerLaunchSpec

        env = {"PDSERVE_NODE_IP": node_ip or ray.util.get_node_ip_address()}
        self._proc = WorkerProcess(name, tuple(WorkerLaunchSpec.from_json(s) for s in specs_json), env=env)

    def start(self, timeout_s: float) -> list[WorkerEndpoint]:
        return self._proc.start(timeout_s)

    def restart(self, timeout_s: float) -> list[WorkerEndpoint]:
        return self._proc.restart(timeout_s)

    def alive(self) -> bool:
        return self._proc.alive()

    def stop(self) -> bool:
        self._proc.stop()
        return True


def _keep_embedded_ray_on_loopback() -> None:
    """Make the embedded single-node Ray this process is about to start bind 127.0.0.1 only. Mutates
    this process's environment, which Ray's daemons and workers inherit.

    Ray resolves its node address through ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``: when it is on (Ray's
    default on Linux), the GCS and Ray's agents bind the host's network address even under
    ``ray.init(_node_ip_address="127.0.0.1")``. Ray reads the variable once, when ``ray`` is first
    imported, so it is set here before that import; if this process imported ``ray`` earlier, the
    constant read then is corrected too (``ray._private.ray_constants.ENABLE_RAY_CLUSTER``, read by
    ``ray._private.services`` at each call)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if "ray" in sys.modules:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


class RayLauncher:
    """Pools as Ray actors, one per process plan. Owns the Ray connection it opened and the placement
    groups it reserved; ``stop`` kills actors, removes the groups, then disconnects. Workers bind their
    node's address as Ray reports it, or loopback when the cluster is one node (see ``_node_ip``)."""

    def __init__(self, address: str | None = None, namespace: str = "pdserve", num_cpus: int | None = None) -> None:
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address is None:
            _keep_embedded_ray_on_loopback()
        import ray

        self._ray = ray
        self._actors: dict[str, Any] = {}
        self._plans: dict[str, ProcessPlan] = {}
        self._groups: dict[str, Any] = {}  # role -> placement group
        if not ray.is_initialized():
            if address:
                ray.init(address=address, namespace=namespace, log_to_driver=False)
            else:
                # address="local": always a new instance, never a stale cluster found on disk.
                ray.init(address="local", namespace=namespace, include_dashboard=False,
                         _node_ip_address="127.0.0.1",
                         num_cpus=num_cpus, log_to_driver=False)
        self._host_cls: Any = ray.remote(_WorkerHost)

    def _reserve(self, plans: list[ProcessPlan], timeout_s: float) -> None:
        """One placement group per pool that asks for one (a bundle per configured process), made once."""
        from ray.util.placement_group import placement_group

        for plan in plans:
            if plan.placement in (None, "SPREAD") or plan.role in self._groups:
                continue
            count = sum(1 for p in plans if p.role == plan.role)
            bundle = ray_bundle(plan.resources)
            group = placement_group([bundle] * count, strategy=plan.placement, name=f"pdserve-{plan.role}")
            self._ray.get(group.ready(), timeout=timeout_s)
            self._groups[plan.role] = group

    def _options(self, plan: ProcessPlan) -> dict[str, Any]:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        options = ray_options(plan.resources)
        # Ray starts actor processes at niceness 15 (its `worker_niceness`), below the front end and
        # Ray's own daemons: an engine would then yield its core to every one of them. Serving engines
        # run at the default priority, as a plain vLLM server does (Ray's job supervisor does the same).
        options.update({"name": None, "max_concurrency": 1,
                        "runtime_env": {"env_vars": {"RAY_worker_niceness": "0"}}})
        group = self._groups.get(plan.role)
        if group is not None and plan.slot < group.bundle_count:
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_group=group, placement_group_bundle_index=plan.slot)
        elif plan.placement == "SPREAD":
            options["scheduling_strategy"] = "SPREAD"
        return options

    def _node_ip(self) -> str | None:
        """127.0.0.1 on a one-node cluster (Ray reports a host's network address even for a node started on
        loopback, and nothing off this machine needs to reach its workers); None otherwise: each node's own
        address as Ray reports it."""
        nodes = [n for n in self._ray.nodes() if n.get("Alive")]
        return "127.0.0.1" if len(nodes) <= 1 else None

    def _spawn(self, plan: ProcessPlan) -> Any:
        actor = self._host_cls.options(**self._options(plan)).remote(
            plan.name, [w.to_json() for w in plan.workers], self._node_ip())
        self._actors[plan.name] = actor
        self._plans[plan.name] = plan
        return actor

    def start(self, plans: list[ProcessPlan], timeout_s: float) -> list[WorkerEndpoint]:
        try:
            self._reserve(plans, timeout_s)
            futures = [self._spawn(plan).start.remote(timeout_s) for plan in plans]
            groups = self._ray.get(futures, timeout=timeout_s + 60)
        except Exception:
            for plan in plans:
                self.stop_process(plan.name)
            raise
        return [endpoint for group in groups for endpoint in group]

    def alive(self, name: str) -> bool:
        actor = self._actors.get(name)
        if actor is None:
            return False
        try:
            return bool(self._ray.get(actor.alive.remote(), timeout=30))
        except Exception:  # the actor (or its node) is gone
            return False

    def restart(self, name: str, timeout_s: float) -> list[WorkerEndpoint]:
        """In the same actor when it lives; otherwise in a new actor (its node may have gone)."""
        actor = self._actors[name]
        try:
            return list(self._ray.get(actor.restart.remote(timeout_s), timeout=timeout_s + 60))
        except self._ray.exceptions.RayActorError:
            log.warning("worker host %s is gone; starting it in a new actor", name)
        with contextlib.suppress(Exception):
            self._ray.kill(actor)
        return list(self._ray.get(self._spawn(self._plans[name]).start.remote(timeout_s), timeout=timeout_s + 60))

    def stop_process(self, name: str) -> None:
        actor = self._actors.pop(name, None)
        self._plans.pop(name, None)
        if actor is None:
            return
        try:
            self._ray.get(actor.stop.remote(), timeout=60)
        except Exception:
            log.exception("stopping worker host %s failed; killing the actor", name)
        with contextlib.suppress(Exception):
            self._ray.kill(actor)

    def stop(self) -> None:
        ray = self._ray
        actors, self._actors = self._actors, {}
        self._plans = {}
        if actors:
            try:
                ray.get([a.stop.remote() for a in actors.values()], timeout=60)
            except Exception:
                log.exception("stopping worker hosts failed; killing the actors")
            for actor in actors.values():
                try:
                    ray.kill(actor)
                except Exception:
                    log.debug("actor already gone", exc_info=True)
        groups, self._groups = self._groups, {}
        for group in groups.values():
            with contextlib.suppress(Exception):
                from ray.util.placement_group import remove_placement_group

                remove_placement_group(group)


def ray_bundle(resources: Resources) -> dict[str, float]:
    """One replica's countable resources as a placement-group bundle (pure; zero amounts left out)."""
    bundle: dict[str, float] = {"CPU": resources.num_cpus, "GPU": resources.num_gpus, **resources.custom}
    if resources.memory_gb:
        bundle["memory"] = float(int(resources.memory_gb * (1 << 30)))
    return {key: value for key, value in bundle.items() if value}


def ray_options(resources: Resources) -> dict[str, Any]:
    """Ray actor options for one replica's ``resources`` (pure): CPUs, GPUs, memory, custom resources
    and the node label selector."""
    options: dict[str, Any] = {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus}
    if resources.custom:
        options["resources"] = dict(resources.custom)
    if resources.memory_gb:
        options["memory"] = int(resources.memory_gb * (1 << 30))
    if resources.node_labels:
        options["label_selector"] = dict(resources.node_labels)
    return options


LAUNCHERS: dict[str, Callable[..., Launcher]] = {"ray": RayLauncher, "local": LocalLauncher}
