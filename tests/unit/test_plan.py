"""Launch plan: distinct ports across pools, per-worker env and endpoints, sim packing, colocated."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.config import PdserveConfig, parse_config
from orchestrator.launch.plan import ProcessPlan, plan_processes
from protocol.engine_args import SimArgs, VllmArgs
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
    endpoints = [str(w.engine.events_endpoint) for w in specs]
    assert len(set(endpoints)) == 5 and all(e.startswith("ipc://") and "r1" in e for e in endpoints)
    for w in specs:
        args, env = w.engine.args, dict(w.engine.env)
        assert isinstance(args, VllmArgs)
        assert w.grpc_host == "127.0.0.1" and w.engine.kind == "vllm" and w.engine.model == "/models/m"
        assert w.engine.worker_id == w.worker_id and w.engine.role == w.role
        assert w.engine.kv_buffer_device == "cpu" and w.engine.lease_timeout_s == 30
        assert w.engine.handoff_host is None and w.engine.link_bandwidth_bytes_per_s is None
        assert args.dtype == "float32"
        assert args.max_num_seqs == (4 if w.role == "prefill" else 16)  # pool args override engine args
        assert args.engine_kwargs() == {"dtype": "float32", "max_num_seqs": args.max_num_seqs}
        assert env["A"] == "1" and env["VLLM_NIXL_SIDE_CHANNEL_HOST"] == "127.0.0.1"
        assert env["UCX_TLS"] == "tcp,self,sm" and env["UCX_NET_DEVICES"] == "lo"
        assert env["PDSERVE_NIXL_PROGRESS_DELAY_US"] == "1000" and env["VLLM_HOST_IP"] == "127.0.0.1"


def test_run_id_keeps_event_endpoints_of_parallel_runs_apart() -> None:
    cfg = config()
    a = {w.engine.events_endpoint for w in workers(plan_processes(cfg, "aaa"))}
    b = {w.engine.events_endpoint for w in workers(plan_processes(cfg, "bbb"))}
    assert not a & b


def test_transfer_settings_reach_the_worker_env() -> None:
    cfg = config(transfer={"ucx_tls": None, "ucx_net_devices": None, "progress_delay_us": 0, "lease_timeout_s": 7})
    (w, _) = workers(plan_processes(cfg, "r"))
    env = dict(w.engine.env)
    assert "UCX_TLS" not in env and "UCX_NET_DEVICES" not in env and "PDSERVE_NIXL_PROGRESS_DELAY_US" not in env
    assert w.engine.lease_timeout_s == 7


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
        assert w.engine.args == SimArgs(profile="tiny-fast") and w.engine.handoff_host == "127.0.0.1"
        assert w.engine.link_bandwidth_bytes_per_s == 10.0 * 1e9 / 8 and w.engine.lease_timeout_s == 30.0
        assert w.engine.events_endpoint is None and not any(k.startswith("VLLM") for k, _ in w.engine.env)


def test_sim_args_from_the_config_are_not_overridden() -> None:
    from worker.engines.sim.profile import profile_for

    cfg = config(engine={"kind": "sim", "args": {"profile": "tiny-fast", "lease_timeout_s": 2.0,
                                                  "handoff_host": "10.0.0.1"}},
                 prefill={"engine_args": {"link_bandwidth_bytes_per_s": 1.0e+6}})
    for w in workers(plan_processes(cfg, "r")):
        profile = profile_for(w.engine)  # what the worker will run with
        assert profile.lease_timeout_s == 2.0 and profile.handoff_host == "10.0.0.1"
        assert profile.link_bandwidth_bytes_per_s == (1e6 if w.role == "prefill" else 10.0 * 1e9 / 8)
        assert profile.block_size == 4  # from the profile file


def test_sim_plan_values_override_the_profile_file() -> None:
    from worker.engines.sim.profile import profile_for

    cfg = config(engine={"kind": "sim", "args": {"profile": "tiny-fast"}}, transfer={"lease_timeout_s": 9})
    profile = profile_for(workers(plan_processes(cfg, "r", host="127.0.0.5"))[0].engine)
    assert (profile.lease_timeout_s, profile.handoff_host) == (9.0, "127.0.0.5")  # the file says 5.0, 127.0.0.1


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


@pytest.mark.parametrize("engine", [
    {"args": {"dtype": "float32", "enforce_eager": True, "gpu_memory_utilization": 1}},
    {"kind": "sim", "args": {"profile": "tiny-fast", "speedup": 20, "handoff_port": 7}},
    {"kind": "sim"},
])
def test_launch_spec_json_round_trip(engine: dict[str, Any]) -> None:
    for w in workers(plan_processes(config(engine=engine, prefill={"engine_args": {"seed": 3}}), "r")):
        back = WorkerLaunchSpec.from_json(w.to_json())
        assert back == w
        if isinstance(w.engine.args, SimArgs):  # which fields override the profile survives the trip
            assert isinstance(back.engine.args, SimArgs)
            assert back.engine.args.overrides() == w.engine.args.overrides()


def test_launch_spec_json_is_strict() -> None:
    (w, _) = workers(plan_processes(config(engine={"kind": "sim", "args": {"speedup": 2}}), "r"))
    text = w.to_json().replace('"speedup":2.0', '"speedup":"2"')
    with pytest.raises(ValueError, match="speedup"):
        WorkerLaunchSpec.from_json(text)
