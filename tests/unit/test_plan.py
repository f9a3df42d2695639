"""Launch plan: distinct ports across pools, per-worker env and endpoints, sim packing, colocated."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.config import PdserveConfig, parse_config
from orchestrator.launch.plan import ProcessPlan, plan_processes, plan_workers
from protocol.engine_args import SimArgs, VllmArgs
from protocol.launch import WorkerLaunchSpec
from worker.node_address import bind_on_node, node_address, side_channel_of

BASE: dict[str, Any] = {"apiVersion": "pdserve/v1", "model": {"name": "m", "path": "/models/m"}}


def config(**sections: Any) -> PdserveConfig:
    return parse_config({**BASE, **sections})


def workers(plans: list[ProcessPlan]) -> list[WorkerLaunchSpec]:
    return [w for p in plans for w in p.workers]


def test_vllm_plan_one_process_per_worker_with_addresses_left_to_the_node() -> None:
    cfg = config(prefill={"replicas": 3, "engine_args": {"max_num_seqs": 4}}, decode={"replicas": 2},
                 engine={"kind": "vllm", "args": {"dtype": "float32", "max_num_seqs": 16}, "env": {"A": "1"}})
    plans = plan_processes(cfg, run_id="r1")
    assert [p.name for p in plans] == ["prefill-host-0", "prefill-host-1", "prefill-host-2",
                                       "decode-host-0", "decode-host-1"]
    specs = workers(plans)
    assert [w.worker_id for w in specs] == ["prefill-0", "prefill-1", "prefill-2", "decode-0", "decode-1"]
    assert all(len(p.workers) == 1 for p in plans)
    assert all(w.grpc_port == 0 for w in specs)  # each gRPC server binds port 0 and reports what it got
    # Nothing is probed or fixed on the driver: the side channel's port and every host are the node's.
    assert {dict(w.engine.env)["VLLM_NIXL_SIDE_CHANNEL_PORT"] for w in specs} == {"0"}
    assert all(w.grpc_host is None and "VLLM_HOST_IP" not in dict(w.engine.env) for w in specs)
    endpoints = [str(w.engine.events_endpoint) for w in specs]
    assert len(set(endpoints)) == 5 and all(e.startswith("ipc://") and "r1" in e for e in endpoints)
    for w in specs:
        args, env = w.engine.args, dict(w.engine.env)
        assert isinstance(args, VllmArgs)
        assert w.engine.kind == "vllm" and w.engine.model == "/models/m"
        assert w.engine.worker_id == w.worker_id and w.engine.role == w.role
        assert w.engine.kv_buffer_device == "cpu" and w.engine.lease_timeout_s == 30
        assert w.engine.handoff_host is None
        assert args.dtype == "float32"
        assert args.max_num_seqs == (4 if w.role == "prefill" else 16)  # pool args override engine args
        assert args.engine_kwargs() == {"dtype": "float32", "max_num_seqs": args.max_num_seqs}
        assert env["A"] == "1" and "VLLM_NIXL_SIDE_CHANNEL_HOST" not in env
        assert env["UCX_TLS"] == "tcp,self,sm" and env["UCX_NET_DEVICES"] == "lo"
        assert env["PDSERVE_NIXL_PROGRESS_DELAY_US"] == "1000"


def test_workers_bind_on_their_own_node() -> None:
    cfg = config(prefill={"replicas": 2}, engine={"kind": "vllm", "args": {"dtype": "float32"}})
    bound = [bind_on_node(w, node) for w, node in zip(workers(plan_processes(cfg, "r")),
                                                       ("127.0.0.3", "127.0.0.2", "127.0.0.2"), strict=True)]
    for w, node in zip(bound, ("127.0.0.3", "127.0.0.2", "127.0.0.2"), strict=True):
        env = dict(w.engine.env)
        assert w.grpc_host == env["VLLM_HOST_IP"] == env["VLLM_NIXL_SIDE_CHANNEL_HOST"] == node
        assert 0 < int(env["VLLM_NIXL_SIDE_CHANNEL_PORT"]) < 65536  # probed on the node itself
        assert side_channel_of(w) == f"{node}:{env['VLLM_NIXL_SIDE_CHANNEL_PORT']}"
    sim = workers(plan_processes(config(engine={"kind": "sim"}), "r"))[0]
    assert bind_on_node(sim, "127.0.0.4").engine.handoff_host == "127.0.0.4"
    assert side_channel_of(bind_on_node(sim, "127.0.0.4")) is None


def test_explicit_addresses_are_kept() -> None:
    cfg = config(network={"worker_host": "127.0.0.9"}, transfer={"side_channel_host": "127.0.0.8"})
    (w, _) = workers(plan_processes(cfg, "r"))
    bound = bind_on_node(w, "127.0.0.2")
    env = dict(bound.engine.env)
    assert bound.grpc_host == env["VLLM_HOST_IP"] == "127.0.0.9" and env["VLLM_NIXL_SIDE_CHANNEL_HOST"] == "127.0.0.8"


def test_node_address_prefers_the_interface_then_the_launcher() -> None:
    assert node_address("lo", {"PDSERVE_NODE_IP": "127.0.0.5"}) == "127.0.0.1"
    assert node_address(None, {"PDSERVE_NODE_IP": "127.0.0.5"}) == "127.0.0.5"
    assert node_address(None, {}) == "127.0.0.1"
    with pytest.raises(OSError):
        node_address("no-such-nic0", {})


def test_scaling_plans_new_workers_with_their_own_ids_and_slots() -> None:
    cfg = config(engine={"kind": "sim"}, prefill={"replicas": 2, "workers_per_process": 2})
    (plan,) = plan_workers(cfg, "prefill", [2, 3], "r")
    assert plan.name == "prefill-host-2" and plan.slot == 1
    assert [w.worker_id for w in plan.workers] == ["prefill-2", "prefill-3"]
    vllm = config(prefill={"replicas": 1}, decode={"replicas": 1})
    (extra,) = plan_workers(vllm, "decode", [1], "r")
    share = extra.workers[0].engine.cpu_share
    assert share is not None and (share.slot, share.slots) == (0, 2)  # wraps onto the configured slots


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
    # Named after their first worker, so processes added by scaling never reuse a name.
    assert [p.name for p in prefill] == [f"prefill-host-{i * per_process}" for i in range(len(sizes))]
    specs = workers(plans)
    assert len(specs) == replicas + 1 and {w.grpc_port for w in specs} == {0}
    for w in specs:
        assert w.engine.args == SimArgs(profile="tiny-fast") and w.engine.handoff_host is None
        assert w.engine.lease_timeout_s == 30.0
        assert w.engine.events_endpoint is None and not any(k.startswith("VLLM") for k, _ in w.engine.env)


def test_sim_args_from_the_config_are_not_overridden() -> None:
    from worker.engines.sim.profile import profile_for

    cfg = config(engine={"kind": "sim", "args": {"profile": "tiny-fast", "lease_timeout_s": 2.0,
                                                  "handoff_host": "10.0.0.1"}},
                 prefill={"engine_args": {"link_bandwidth_bytes_per_s": 1.0e+6}}, transfer={"link_bandwidth_gbps": 80})
    for w in workers(plan_processes(cfg, "r")):
        profile = profile_for(bind_on_node(w, "127.0.0.1").engine)  # what the worker will run with
        assert profile.lease_timeout_s == 2.0 and profile.handoff_host == "10.0.0.1"
        # The link is the profile's (tiny-fast: 1e8 B/s) unless the engine args set it; never transfer's.
        assert profile.link_bandwidth_bytes_per_s == (1e6 if w.role == "prefill" else 1e8)
        assert profile.block_size == 4  # from the profile file


def test_sim_plan_values_override_the_profile_file() -> None:
    from worker.engines.sim.profile import profile_for

    cfg = config(engine={"kind": "sim", "args": {"profile": "tiny-fast"}}, transfer={"lease_timeout_s": 9})
    profile = profile_for(bind_on_node(workers(plan_processes(cfg, "r"))[0], "127.0.0.5").engine)
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


def test_the_link_prior_is_the_config_s_else_the_sim_engines_own_else_10_gbps() -> None:
    from orchestrator.service import link_priors

    sim = {"kind": "sim", "args": {"profile": "tiny-fast"}}
    assert link_priors(config(engine=sim)).cross_host_bytes_per_s == 1e8  # the profile's link
    faster = {"kind": "sim", "args": {"profile": "tiny-fast", "link_bandwidth_bytes_per_s": 5e9}}
    assert link_priors(config(engine=faster)).cross_host_bytes_per_s == 5e9
    told = config(engine=sim, transfer={"link_bandwidth_gbps": 80})
    assert link_priors(told).cross_host_bytes_per_s == 80e9 / 8
    vllm = config(engine={"kind": "vllm", "args": {"dtype": "float32"}})
    assert link_priors(vllm).cross_host_bytes_per_s == 10e9 / 8
