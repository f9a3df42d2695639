"""Launch plan: distinct ports across pools, per-worker env and endpoints, sim packing, colocated."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.config import PdserveConfig, parse_config
from orchestrator.launch.plan import ProcessPlan, plan_processes
from protocol.launch import WorkerLaunchSpec

BASE: dict[str, Any] = {"apiVersion": "pdserve/v1", "model": {"name": "m", "path": "/models/m"}}


def config(**sections: Any) -> PdserveConfig:
    return parse_config({**BASE, **sections})


def workers(plans: list[ProcessPlan]) -> list[WorkerLaunchSpec]:
    return [w for p in plans for w in p.workers]


def test_vllm_plan_one_process_per_worker_with_distinct_ports_and_endpoints() -> None:
    cfg = config(prefill={"replicas": 3, "engine_args": {"max_num_seqs": 4}}, decode={"replicas": 2},
                 engine={"kind": "vllm", "args": {"dtype": "float32", "max_num_seqs": 16}, "env": {"A": "1"}})
    plans = plan_processes(cfg, run_id="r1")
    assert [p.name for p in plans] == ["prefill-host-0", "prefill-host-1", "prefill-host-2",
                                       "decode-host-0", "decode-host-1"]
    specs = workers(plans)
    assert [w.worker_id for w in specs] == ["prefill-0", "prefill-1", "prefill-2", "decode-0", "decode-1"]
    assert all(len(p.workers) == 1 for p in plans)
    assert all(w.grpc_port == 0 for w in specs)  # each gRPC server binds port 0 and reports what it got
    side_ports = [int(dict(w.engine.env)["VLLM_NIXL_SIDE_CHANNEL_PORT"]) for w in specs]
    assert len(set(side_ports)) == len(side_ports) == 5  # distinct across both pools
    assert all(0 < p < 65536 for p in side_ports)
    endpoints = [str(dict(w.engine.args)["events_endpoint"]) for w in specs]
    assert len(set(endpoints)) == 5 and all(e.startswith("ipc://") and "r1" in e for e in endpoints)
    for w in specs:
        args, env = dict(w.engine.args), dict(w.engine.env)
        assert w.grpc_host == "127.0.0.1" and w.engine.kind == "vllm" and w.engine.model == "/models/m"
        assert w.engine.worker_id == w.worker_id and w.engine.role == w.role
        assert args["dtype"] == "float32" and args["kv_buffer_device"] == "cpu" and args["kv_lease_s"] == 30
        assert args["max_num_seqs"] == (4 if w.role == "prefill" else 16)  # pool args override engine args
        assert env["A"] == "1" and env["VLLM_NIXL_SIDE_CHANNEL_HOST"] == "127.0.0.1"
        assert env["UCX_TLS"] == "tcp,self,sm" and env["UCX_NET_DEVICES"] == "lo"
        assert env["PDSERVE_NIXL_PROGRESS_DELAY_US"] == "1000" and env["VLLM_HOST_IP"] == "127.0.0.1"


def test_run_id_keeps_event_endpoints_of_parallel_runs_apart() -> None:
    cfg = config()
    a = {dict(w.engine.args)["events_endpoint"] for w in workers(plan_processes(cfg, "aaa"))}
    b = {dict(w.engine.args)["events_endpoint"] for w in workers(plan_processes(cfg, "bbb"))}
    assert not a & b


def test_transfer_settings_reach_the_worker_env() -> None:
    cfg = config(transfer={"ucx_tls": None, "ucx_net_devices": None, "progress_delay_us": 0, "lease_timeout_s": 7})
    (w, _) = workers(plan_processes(cfg, "r"))
    env = dict(w.engine.env)
    assert "UCX_TLS" not in env and "UCX_NET_DEVICES" not in env and "PDSERVE_NIXL_PROGRESS_DELAY_US" not in env
    assert dict(w.engine.args)["kv_lease_s"] == 7


@pytest.mark.parametrize(("replicas", "per_process", "sizes"), [
    (5, 2, [2, 2, 1]), (4, 4, [4]), (1, 8, [1]), (3, 1, [1, 1, 1]),
])
def test_sim_workers_are_packed(replicas: int, per_process: int, sizes: list[int]) -> None:
    cfg = config(engine={"kind": "sim", "args": {"profile": "tiny-fast"}},
                 prefill={"replicas": replicas, "workers_per_process": per_process},
                 decode={"replicas": 1, "workers_per_process": per_process})
    plans = plan_processes(cfg, "r")
    prefill = [p for p in plans if p.role == "prefill"]
    assert [len(p.workers) for p in prefill] == sizes
    assert [p.name for p in prefill] == [f"prefill-host-{i}" for i in range(len(sizes))]
    specs = workers(plans)
    assert len(specs) == replicas + 1 and {w.grpc_port for w in specs} == {0}
    for w in specs:
        args = dict(w.engine.args)
        assert args["profile"] == "tiny-fast" and args["handoff_host"] == "127.0.0.1"
        assert args["link_bandwidth_bytes_per_s"] == 10.0 * 1e9 / 8 and args["lease_timeout_s"] == 30.0
        assert "events_endpoint" not in args and not any(k.startswith("VLLM") for k, _ in w.engine.env)


def test_sim_args_from_the_config_are_not_overridden() -> None:
    cfg = config(engine={"kind": "sim", "args": {"profile": "tiny-fast", "lease_timeout_s": 2.0,
                                                  "handoff_host": "10.0.0.1"}})
    for w in workers(plan_processes(cfg, "r")):
        assert dict(w.engine.args)["lease_timeout_s"] == 2.0 and dict(w.engine.args)["handoff_host"] == "10.0.0.1"


def test_colocated_plans_only_both_workers_from_the_decode_pool() -> None:
    cfg = config(colocated=True, prefill={"replicas": 5}, decode={"replicas": 2})
    plans = plan_processes(cfg, "r")
    assert [w.worker_id for w in workers(plans)] == ["both-0", "both-1"]
    assert {p.role for p in plans} == {"both"}


def test_zero_prefill_replicas_plans_decode_only() -> None:
    plans = plan_processes(config(prefill={"replicas": 0}), "r")
    assert [w.worker_id for w in workers(plans)] == ["decode-0"]


def test_resources_follow_the_pool() -> None:
    cfg = config(prefill={"resources": {"num_gpus": 1, "num_cpus": 2}}, decode={"resources": {"num_gpus": 0.5}})
    prefill, decode = plan_processes(cfg, "r")
    assert (prefill.resources.num_gpus, prefill.resources.num_cpus) == (1, 2)
    assert decode.resources.num_gpus == 0.5


def test_launch_spec_json_round_trip() -> None:
    for w in workers(plan_processes(config(engine={"args": {"a": [1, 2], "b": None}}), "r")):
        assert WorkerLaunchSpec.from_json(w.to_json()) == w
