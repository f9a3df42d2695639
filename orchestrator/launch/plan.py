"""From a config to the exact set of worker processes to start (pure).

Each vLLM worker gets its own process and KV-event ipc endpoint; its gRPC port and NIXL side-channel
port are chosen on its own node when it starts (``worker.node_address``), so nothing is probed here.
Simulated workers are packed ``workers_per_process`` to a process. ``plan_workers`` plans any set of a
pool's workers (the configured ones at start, more when the pool is scaled up).
Every worker's ``EngineSpec`` carries the pool's typed engine arguments (``engine.args`` with the
pool's ``engine_args`` laid over them) and, as typed fields, what the plan decides per worker: the
lease from ``transfer.lease_timeout_s``; for vLLM the KV buffer device, the events endpoint, the NIXL
environment and the worker's cores; for sim, with ``engine.topology``, the worker's host
(``SimTopology.host_of``: the address its gRPC server and handoff listener bind) and the topology
itself. Sim workers are packed into processes in index order, so a host's workers share a process when
``workers_per_process`` is a multiple of ``workers_per_host`` (the config checks it) and the indices
planned together start on a host boundary.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from orchestrator.config import PdserveConfig, PoolConfig, Resources
from protocol.launch import AdapterSpec, CpuShare, EngineSpec, WorkerLaunchSpec
from transfer.nixl_env import worker_env


@dataclass(frozen=True)
class ProcessPlan:
    """One OS process hosting one or more workers of one pool, with the Ray resources it asks for.
    ``slot``: the process's position in its pool (its placement-group bundle, when the pool has one);
    ``placement``: the pool's Ray placement strategy (``PoolConfig.placement``)."""

    name: str
    role: str
    workers: tuple[WorkerLaunchSpec, ...]
    resources: Resources
    slot: int = 0
    placement: str | None = None


def _pools(config: PdserveConfig) -> list[tuple[str, PoolConfig]]:
    if config.colocated:
        return [("both", config.decode)]
    return [("prefill", config.prefill), ("decode", config.decode)]


def pool_config(config: PdserveConfig, role: str) -> PoolConfig:
    """The pool config of ``role`` (``prefill``, ``decode`` or ``both``); raises ``KeyError``."""
    return dict(_pools(config))[role]


def _cpu_share(config: PdserveConfig, role: str, index: int) -> CpuShare | None:
    """The share of worker ``index`` of ``role`` on a CPU host: the configured workers, in launch order,
    split the host (all count as sharing one host: the single-host deployments where ``bind: auto``
    applies); a worker added by scaling takes the slot its position wraps onto. In a deployment of several
    models, ``cpu.host_slots`` counts every model's workers and ``cpu.slot_offset`` is where this model's
    start. None for GPUs, sim or ``bind: none``."""
    if config.engine.kind != "vllm" or config.transfer.device != "cpu" or config.cpu.bind != "auto":
        return None
    pools = _pools(config)
    own = max(1, sum(pool.replicas for _, pool in pools))
    slots = config.cpu.host_slots or own
    before = 0  # this model's workers of the pools launched before ``role``'s
    for name, pool in pools:
        if name == role:
            break
        before += pool.replicas
    return CpuShare(slot=(config.cpu.slot_offset + (before + index) % own) % slots, slots=slots,
                    frontend_cores=config.cpu.frontend_cores)


def worker_spec(config: PdserveConfig, role: str, index: int, run_id: str) -> WorkerLaunchSpec:
    """The launch spec of worker ``{prefix}{role}-{index}`` (``PdserveConfig.worker_prefix``). Addresses and
    ports are left for the worker's own node to fill in
    (``worker.node_address``) unless ``network.worker_host`` names one."""
    transfer = config.transfer
    pool = pool_config(config, role)
    worker_id = f"{config.worker_prefix}{role}-{index}"
    lease = float(transfer.lease_timeout_s)
    args = config.engine_args_for(pool)
    env = dict(config.engine.env)
    if config.engine.kind == "vllm":
        ipc_dir = os.environ.get("PDSERVE_IPC_DIR", tempfile.gettempdir())
        env.update(worker_env(transfer))
        adapters = tuple(AdapterSpec(name=a.name, adapter_id=i, path=str(a.resolved_path))
                         for i, a in enumerate(config.model.adapters, start=1))
        engine = EngineSpec(model=str(config.model.resolved_path), worker_id=worker_id, role=role, args=args,
                            env=tuple(sorted(env.items())), lease_timeout_s=lease, kv_buffer_device=transfer.device,
                            events_endpoint=f"ipc://{ipc_dir}/pdserve-{run_id}-{worker_id}.kv",
                            cpu_share=_cpu_share(config, role, index), adapters=adapters)
    else:
        topology = getattr(config.engine, "topology", None)
        engine = EngineSpec(model=str(config.model.resolved_path), worker_id=worker_id, role=role, args=args,
                            env=tuple(sorted(env.items())), lease_timeout_s=lease, sim_topology=topology)
        if topology is not None:
            return WorkerLaunchSpec(worker_id=worker_id, role=role, grpc_host=topology.host_of(role, index),
                                    grpc_port=0, engine=engine)
    return WorkerLaunchSpec(worker_id=worker_id, role=role, grpc_host=config.network.worker_host, grpc_port=0,
                            interface=config.network.worker_interface, engine=engine)


def plan_workers(config: PdserveConfig, role: str, indices: Sequence[int], run_id: str) -> list[ProcessPlan]:
    """The processes hosting workers ``{role}-{i}`` for ``i`` in ``indices``: one per vLLM worker, sim
    workers packed ``workers_per_process`` to a process named after its first worker's slot."""
    pool = pool_config(config, role)
    specs = [worker_spec(config, role, i, run_id) for i in indices]
    per_process = 1 if config.engine.kind == "vllm" else pool.workers_per_process
    plans = []
    for start in range(0, len(specs), per_process):
        group = tuple(specs[start:start + per_process])
        slot = indices[start] // per_process
        plans.append(ProcessPlan(name=f"{config.worker_prefix}{role}-host-{indices[start]}", role=role, workers=group,
                                 resources=pool.resources, slot=slot, placement=pool.placement))
    return plans


def plan_deployment(models: Iterable[PdserveConfig], run_id: str) -> list[ProcessPlan]:
    """Every process of every served model's configured pools (``orchestrator.deployment``)."""
    return [plan for config in models for plan in plan_processes(config, run_id)]


def plan_processes(config: PdserveConfig, run_id: str) -> list[ProcessPlan]:
    """Every process of the configured pools. ``run_id`` keeps ipc paths of parallel runs apart."""
    return [plan for role, pool in _pools(config) for plan in plan_workers(config, role, range(pool.replicas), run_id)]
