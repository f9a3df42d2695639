"""From a config to the exact set of worker processes to start (pure, apart from probing free ports).

Each vLLM worker gets its own process, gRPC port, NIXL side-channel port and KV-event ipc endpoint,
so several workers share a host. Simulated workers are packed ``workers_per_process`` to a process.
Every worker's ``EngineSpec`` carries the pool's typed engine arguments (``engine.args`` with the
pool's ``engine_args`` laid over them) and, as typed fields, what the plan decides per worker: the
lease from ``transfer.lease_timeout_s``; for vLLM the KV buffer device, the events endpoint and the
NIXL environment; for sim the handoff host and the link bandwidth from ``transfer.link_bandwidth_gbps``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from orchestrator.config import PdserveConfig, PoolConfig, Resources
from protocol.launch import CpuShare, EngineSpec, WorkerLaunchSpec
from transfer.nixl_env import worker_env
from transfer.ports import free_ports


@dataclass(frozen=True)
class ProcessPlan:
    """One OS process hosting one or more workers, with the Ray resources it asks for."""

    name: str
    role: str
    workers: tuple[WorkerLaunchSpec, ...]
    resources: Resources


def _pools(config: PdserveConfig) -> list[tuple[str, PoolConfig]]:
    if config.colocated:
        return [("both", config.decode)]
    return [("prefill", config.prefill), ("decode", config.decode)]


def _cpu_shares(config: PdserveConfig, workers: int) -> Iterator[CpuShare]:
    """One share per vLLM worker on a CPU host, in launch order (nothing for GPUs, sim or ``bind: none``).
    All workers count as sharing one host: the single-host deployments this plan starts today."""
    if config.engine.kind != "vllm" or config.transfer.device != "cpu" or config.cpu.bind != "auto":
        return iter(())
    return (CpuShare(slot=i, slots=workers, frontend_cores=config.cpu.frontend_cores) for i in range(workers))


def plan_processes(config: PdserveConfig, run_id: str, host: str = "127.0.0.1") -> list[ProcessPlan]:
    """Every process to start, ports chosen now. ``run_id`` keeps ipc paths of parallel runs apart."""
    transfer = config.transfer
    model = str(config.model.resolved_path)
    lease = float(transfer.lease_timeout_s)
    ipc_dir = os.environ.get("PDSERVE_IPC_DIR", tempfile.gettempdir())
    plans: list[ProcessPlan] = []
    pools = _pools(config)
    # gRPC servers bind port 0 and report the port they got; only NIXL side channels (bound later by
    # vLLM itself) need a port chosen now, probed in one call so no two workers get the same one.
    vllm = config.engine.kind == "vllm"
    side_ports = free_ports(sum(pool.replicas for _, pool in pools), host) if vllm else []
    shares = _cpu_shares(config, sum(pool.replicas for _, pool in pools))
    for role, pool in pools:
        count = pool.replicas
        ports, side_ports = side_ports[:count], side_ports[count:]
        args = config.engine_args_for(pool)
        specs: list[WorkerLaunchSpec] = []
        for i in range(count):
            worker_id = f"{role}-{i}"
            env = dict(config.engine.env)
            if vllm:
                env.update(worker_env(transfer, side_channel_port=ports[i]))
                env.setdefault("VLLM_HOST_IP", host)
                engine = EngineSpec(model=model, worker_id=worker_id, role=role, args=args,
                                    env=tuple(sorted(env.items())), lease_timeout_s=lease,
                                    kv_buffer_device=transfer.device,
                                    events_endpoint=f"ipc://{ipc_dir}/pdserve-{run_id}-{worker_id}.kv",
                                    cpu_share=next(shares, None))
            else:
                engine = EngineSpec(model=model, worker_id=worker_id, role=role, args=args,
                                    env=tuple(sorted(env.items())), lease_timeout_s=lease, handoff_host=host,
                                    link_bandwidth_bytes_per_s=transfer.link_bandwidth_bytes_per_s)
            specs.append(WorkerLaunchSpec(worker_id=worker_id, role=role, grpc_host=host,
                                          grpc_port=0, engine=engine))
        per_process = 1 if vllm else pool.workers_per_process
        for start in range(0, len(specs), per_process):
            group = tuple(specs[start:start + per_process])
            plans.append(ProcessPlan(name=f"{role}-host-{start // per_process}", role=role, workers=group,
                                     resources=pool.resources))
    return plans
