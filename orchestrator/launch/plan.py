"""From a config to the exact set of worker processes to start (pure, apart from probing free ports).

Each vLLM worker gets its own process, gRPC port, NIXL side-channel port and KV-event ipc endpoint,
so several workers share a host. Simulated workers are packed ``workers_per_process`` to a process.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from orchestrator.config import PdserveConfig, PoolConfig, Resources
from protocol.launch import EngineSpec, WorkerLaunchSpec
from transfer.nixl_env import TransferSettings, engine_transfer_args, worker_env
from transfer.ports import free_ports


@dataclass(frozen=True)
class ProcessPlan:
    """One OS process hosting one or more workers, with the Ray resources it asks for."""

    name: str
    role: str
    workers: tuple[WorkerLaunchSpec, ...]
    resources: Resources


def transfer_settings(config: PdserveConfig) -> TransferSettings:
    t = config.transfer
    return TransferSettings(device=t.device, side_channel_host=t.side_channel_host, ucx_tls=t.ucx_tls,
                            ucx_net_devices=t.ucx_net_devices, lease_timeout_s=t.lease_timeout_s,
                            progress_delay_us=t.progress_delay_us)


def _pools(config: PdserveConfig) -> list[tuple[str, PoolConfig]]:
    if config.colocated:
        return [("both", config.decode)]
    return [("prefill", config.prefill), ("decode", config.decode)]


def plan_processes(config: PdserveConfig, run_id: str, host: str = "127.0.0.1") -> list[ProcessPlan]:
    """Every process to start, ports chosen now. ``run_id`` keeps ipc paths of parallel runs apart."""
    settings = transfer_settings(config)
    ipc_dir = os.environ.get("PDSERVE_IPC_DIR", tempfile.gettempdir())
    plans: list[ProcessPlan] = []
    pools = _pools(config)
    # gRPC servers bind port 0 and report the port they got; only NIXL side channels (bound later by
    # vLLM itself) need a port chosen now, probed in one call so no two workers get the same one.
    vllm = config.engine.kind == "vllm"
    side_ports = free_ports(sum(pool.replicas for _, pool in pools), host) if vllm else []
    for role, pool in pools:
        count = pool.replicas
        ports, side_ports = side_ports[:count], side_ports[count:]
        specs: list[WorkerLaunchSpec] = []
        for i in range(count):
            worker_id = f"{role}-{i}"
            args: dict[str, object] = dict(config.engine.args)
            args.update(pool.engine_args)
            env = dict(config.engine.env)
            if vllm:
                args.update(engine_transfer_args(settings))
                args["events_endpoint"] = f"ipc://{ipc_dir}/pdserve-{run_id}-{worker_id}.kv"
                env.update(worker_env(settings, side_channel_port=ports[i]))
                env.setdefault("VLLM_HOST_IP", host)
            else:
                args.setdefault("handoff_host", host)
                args.setdefault("link_bandwidth_bytes_per_s", config.transfer.link_bandwidth_gbps * 1e9 / 8)
                args.setdefault("lease_timeout_s", float(config.transfer.lease_timeout_s))
            engine = EngineSpec(
                kind=config.engine.kind, model=str(config.model.resolved_path), worker_id=worker_id, role=role,
                args=tuple(sorted(args.items())), env=tuple(sorted(env.items())),
            )
            specs.append(WorkerLaunchSpec(worker_id=worker_id, role=role, grpc_host=host,
                                          grpc_port=0, engine=engine))
        per_process = 1 if vllm else pool.workers_per_process
        for start in range(0, len(specs), per_process):
            group = tuple(specs[start:start + per_process])
            plans.append(ProcessPlan(name=f"{role}-host-{start // per_process}", role=role, workers=group,
                                     resources=pool.resources))
    return plans
