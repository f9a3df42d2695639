"""CPU shares: the plan gives each vLLM CPU worker a slot; the worker turns it into disjoint cores;
vLLM's NIXL affinity call is kept inside them."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.config import parse_config
from orchestrator.launch.plan import plan_processes
from protocol.launch import CpuShare
from transfer.cpu_affinity import clamp
from worker.cpu_share import CORES_ENV, cores_for, pin

BASE: dict[str, Any] = {"apiVersion": "pdserve/v1", "model": {"name": "m", "path": "/models/m"}}


@pytest.mark.parametrize(
    ("cores", "slots", "frontend", "expected"),
    [
        (2, 2, 1, [[0], [1]]),                      # the 2-core default: prefill on 0, decode on 1
        (8, 2, 1, [[0, 1, 2], [3, 4, 5]]),          # 7 usable cores: 3 each, core 7 (and 6) left over
        (8, 2, 0, [[0, 1, 2, 3], [4, 5, 6, 7]]),
        (4, 3, 1, [[0], [1], [2]]),                 # the front end keeps core 3
        (3, 3, 1, [[0], [1], [2]]),                 # not enough to keep one: workers first
        (2, 3, 1, [[0], [1], [0]]),                 # more workers than cores: round-robin
    ],
)
def test_cores_are_split_disjointly_where_they_suffice(cores: int, slots: int, frontend: int,
                                                         expected: list[list[int]]) -> None:
    got = [cores_for(CpuShare(slot=i, slots=slots, frontend_cores=frontend), range(cores)) for i in range(slots)]
    assert got == expected


def test_cores_follow_the_nodes_own_core_ids() -> None:
    share = CpuShare(slot=1, slots=2, frontend_cores=0)
    assert cores_for(share, [9, 4, 5, 8]) == [8, 9]


def test_affinity_requests_are_kept_to_the_workers_cores() -> None:
    owned = frozenset({0})
    assert clamp([1], owned) == {0}          # NIXL's "last core of the node" is another worker's
    assert clamp([0, 1], owned) == {0}
    assert clamp([2, 3], frozenset({2, 3, 4})) == {2, 3}


def test_the_plan_gives_each_vllm_cpu_worker_its_own_slot() -> None:
    cfg = parse_config({**BASE, "prefill": {"replicas": 2}, "decode": {"replicas": 1}})
    shares = [w.engine.cpu_share for p in plan_processes(cfg, run_id="r") for w in p.workers]
    assert shares == [CpuShare(slot=i, slots=3, frontend_cores=1) for i in range(3)]


@pytest.mark.parametrize("sections", [
    {"cpu": {"bind": "none"}},
    {"transfer": {"device": "cuda", "ucx_tls": None, "ucx_net_devices": None}},
    {"engine": {"kind": "sim", "args": {"profile": "tiny-fast"}}},
])
def test_no_share_for_gpus_sim_or_when_binding_is_off(sections: dict[str, Any]) -> None:
    cfg = parse_config({**BASE, **sections})
    assert all(w.engine.cpu_share is None for p in plan_processes(cfg, run_id="r") for w in p.workers)


def test_a_binding_set_in_the_config_is_left_alone() -> None:
    env = {"VLLM_CPU_OMP_THREADS_BIND": "0-1"}
    assert pin(CpuShare(slot=0, slots=2), env) == []
    assert env == {"VLLM_CPU_OMP_THREADS_BIND": "0-1"} and CORES_ENV not in env
