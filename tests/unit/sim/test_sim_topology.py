"""The simulated fleet's topology: host addresses by pool, rack and slot; the config's checks; the launch
plan putting each worker on its host; the link model (cross-rack cap and latency) and the shared NIC."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator.config import ConfigError, parse_config
from orchestrator.launch.plan import plan_processes
from protocol.engine_args import SimArgs
from protocol.launch import WorkerLaunchSpec
from protocol.sim_topology import SimTopology
from worker.engines.sim.nic import LinkModel, Nic, nic_for
from worker.engines.sim.profile import profile_for
from worker.node_address import bind_on_node

TWO_RACKS = SimTopology(workers_per_host=2, racks=2, cross_rack_gbps=8.0, cross_rack_latency_s=0.01)


def test_hosts_are_dealt_over_racks() -> None:
    hosts = [TWO_RACKS.host_of("decode", i) for i in range(8)]
    assert hosts == ["127.2.1.1", "127.2.1.1", "127.2.2.1", "127.2.2.1",
                     "127.2.1.2", "127.2.1.2", "127.2.2.2", "127.2.2.2"]
    assert TWO_RACKS.host_of("prefill", 0) == "127.1.1.1" and TWO_RACKS.host_of("both", 3) == "127.3.2.1"
    assert [SimTopology.rack_of(h) for h in hosts[::2]] == [0, 1, 0, 1]
    with pytest.raises(ValueError):
        SimTopology(racks=1).host_of("decode", 254)


@pytest.mark.parametrize(("src", "dst", "crosses"), [
    ("127.1.1.1", "127.2.1.7", False), ("127.1.1.1", "127.2.2.1", True),
    ("127.0.0.1", "127.2.2.1", False), ("localhost", "127.2.2.1", False), ("127.9.2.1", "127.2.1.1", False),
])
def test_only_hosts_of_the_scheme_cross_racks(src: str, dst: str, crosses: bool) -> None:
    assert TWO_RACKS.crosses_racks(src, dst) is crosses


def test_the_model_is_strict() -> None:
    with pytest.raises(ValidationError):
        SimTopology.model_validate({"racks": "2"})
    with pytest.raises(ValidationError):
        SimTopology.model_validate({"racks": 2, "nic_gbps": 400})


BASE: dict[str, Any] = {"apiVersion": "pdserve/v1", "model": {"name": "m", "path": "/models/m"}}
TOPOLOGY = {"workers_per_host": 2, "racks": 2, "cross_rack_gbps": 8.0}


def sim(**sections: Any) -> dict[str, Any]:
    engine = {"kind": "sim", "args": {"profile": "tiny-fast"}, "topology": TOPOLOGY}
    return {**BASE, "engine": engine, "prefill": {"replicas": 2, "workers_per_process": 2},
            "decode": {"replicas": 4, "workers_per_process": 4}, **sections}


def test_the_plan_puts_each_worker_on_its_host() -> None:
    plans = plan_processes(parse_config(sim()), "r")
    specs: list[WorkerLaunchSpec] = [w for p in plans for w in p.workers]
    assert [(w.worker_id, w.grpc_host) for w in specs] == [
        ("prefill-0", "127.1.1.1"), ("prefill-1", "127.1.1.1"),
        ("decode-0", "127.2.1.1"), ("decode-1", "127.2.1.1"), ("decode-2", "127.2.2.1"), ("decode-3", "127.2.2.1")]
    for w in specs:
        assert w.engine.sim_topology == SimTopology.model_validate(TOPOLOGY)
        bound = bind_on_node(w, "127.0.0.1")  # the process's node: the worker keeps its host
        assert bound.grpc_host == w.grpc_host and profile_for(bound.engine).handoff_host == w.grpc_host
        assert WorkerLaunchSpec.from_json(bound.to_json()) == bound  # the topology survives the trip


@pytest.mark.parametrize(("sections", "problem"), [
    ({"decode": {"replicas": 4, "workers_per_process": 3}}, "decode.workers_per_process (3)"),
    ({"network": {"worker_host": "127.0.0.9"}}, "network.worker_host"),
    ({"decode": {"replicas": 2, "workers_per_process": 2, "engine_args": {"handoff_host": "127.0.0.1"}}},
     "must not set handoff_host"),
])
def test_the_config_refuses_what_the_topology_cannot_model(sections: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        parse_config(sim(**sections))


def test_a_colocated_fleet_checks_only_its_one_pool() -> None:
    cfg = parse_config(sim(colocated=True, decode={"replicas": 4, "workers_per_process": 2}))
    assert [w.grpc_host for p in plan_processes(cfg, "r") for w in p.workers] == [
        "127.3.1.1", "127.3.1.1", "127.3.2.1", "127.3.2.1"]


def test_pulls_between_racks_are_capped_and_later() -> None:
    profile = SimArgs(profile="tiny-fast", link_bandwidth_bytes_per_s=1e9, link_latency_s=0.001,
                      speedup=2.0).resolve()
    link = LinkModel(profile, "127.2.1.1", TWO_RACKS)  # 8 Gb/s = 1e9 B/s between racks: the NIC's own speed
    assert link.transfer_seconds("127.1.1.1", 10**9) == pytest.approx((0.001 + 1.0) / 2)
    assert link.transfer_seconds("127.1.2.1", 10**9) == pytest.approx((0.001 + 0.01 + 1.0) / 2)
    slower = LinkModel(profile, "127.2.1.1", TWO_RACKS.model_copy(update={"cross_rack_gbps": 2.0}))
    assert slower.transfer_seconds("127.1.2.1", 10**9) == pytest.approx((0.011 + 4.0) / 2)
    assert slower.transfer_seconds("127.1.2.1", 0) == 0.0
    assert LinkModel(profile, "127.2.1.1").transfer_seconds("127.1.2.1", 10**9) == pytest.approx(0.5005)


def test_a_nic_carries_one_pull_at_a_time() -> None:
    nic = Nic("h")
    assert nic.reserve(10.0, 1.0) == 11.0
    assert nic.reserve(10.5, 1.0) == 12.0  # waits for the first
    assert nic.reserve(20.0, 1.0) == 21.0  # idle again
    assert nic_for("127.2.1.9") is nic_for("127.2.1.9") and nic_for("127.2.1.9") is not nic_for("127.2.1.8")
