"""Configs of several models (``models:``): each entry validated as a whole model with the shared sections,
errors at their paths, keys in worker ids, one CPU split over every model's vLLM workers."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.config import ConfigError
from orchestrator.deployment import Deployment, key_of, parse_deployment
from orchestrator.launch.plan import plan_deployment, plan_workers

SIM = {"kind": "sim", "args": {"profile": "tiny-fast"}}
VLLM = {"kind": "vllm", "args": {"dtype": "float32"}}


def entry(name: str, **sections: Any) -> dict[str, Any]:
    return {"model": {"name": name, "path": f"/models/{name}"}, **sections}


def deployment(*entries: dict[str, Any], overrides: dict[str, Any] | None = None, **shared: Any) -> Deployment:
    return parse_deployment({"apiVersion": "pdserve/v1", "models": list(entries), **shared}, "t.yaml", overrides)


def problems(*entries: Any, **shared: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_deployment({"apiVersion": "pdserve/v1", "models": list(entries), **shared}, "t.yaml")
    return info.value.problems


def test_a_single_model_file_is_one_model_without_a_key() -> None:
    one = parse_deployment({"apiVersion": "pdserve/v1", "model": {"name": "m", "path": "/m"}})
    assert len(one) == 1 and one.shared.model.key is None and one.shared.worker_prefix == ""
    assert [w.worker_id for p in plan_deployment(one, "r") for w in p.workers] == ["prefill-0", "decode-0"]
    assert one.owner_of("decode-0") is one.shared


def test_each_model_gets_the_shared_sections_and_its_own_pools() -> None:
    both = deployment(entry("HuggingFaceTB/SmolLM2-135M", engine=VLLM, prefill={"replicas": 2}),
                      entry("sim-llama", engine=SIM, colocated=True, decode={"replicas": 3}),
                      server={"port": 9000}, limits={"max_messages": 7})
    small, sim = both
    assert both.names == ("HuggingFaceTB/SmolLM2-135M", "sim-llama")
    assert (small.model.key, sim.model.key) == ("smollm2-135m", "sim-llama")
    assert small.server.port == sim.server.port == 9000 and sim.limits.max_messages == 7
    assert (small.prefill.replicas, sim.colocated, sim.decode.replicas) == (2, True, 3)
    ids = [w.worker_id for p in plan_deployment(both, "r") for w in p.workers]
    assert ids == ["smollm2-135m.prefill-0", "smollm2-135m.prefill-1", "smollm2-135m.decode-0",
                   "sim-llama.both-0", "sim-llama.both-1", "sim-llama.both-2"]
    names = [p.name for p in plan_deployment(both, "r")]
    assert len(set(names)) == len(names) and names[0] == "smollm2-135m.prefill-host-0"
    assert both.owner_of("sim-llama.both-1") is sim and both.owner_of("smollm2-135m.decode-0") is small
    with pytest.raises(KeyError):
        both.owner_of("decode-0")


def test_vllm_workers_of_every_model_split_the_host() -> None:
    both = deployment(entry("a", engine=VLLM), entry("b", engine=VLLM, prefill={"replicas": 2}),
                      entry("c", engine=SIM))
    shares = [(w.worker_id, w.engine.cpu_share) for p in plan_deployment(both, "r") for w in p.workers]
    slots = {wid: (s.slot, s.slots) for wid, s in shares if s is not None}
    assert slots == {"a.prefill-0": (0, 5), "a.decode-0": (1, 5), "b.prefill-0": (2, 5), "b.prefill-1": (3, 5),
                     "b.decode-0": (4, 5)}
    assert all(s is None for wid, s in shares if wid.startswith("c."))  # simulated workers bind nothing
    # Workers added by scaling wrap onto their own model's slots (b has 2, 3 and 4), never another model's.
    added = [w.engine.cpu_share for p in plan_workers(both.models[1], "prefill", [2, 3, 4], "r") for w in p.workers]
    assert [s.slot if s else None for s in added] == [4, 2, 3]


def test_entries_hold_only_per_model_sections() -> None:
    assert problems(entry("a", server={"port": 1}), entry("b")) == [
        "models.0.server: shared by every model, set it at the top level"]
    found = problems(entry("a"), model={"name": "x", "path": "/x"})
    assert found == ["model: set per model in each entry of models:"]


def test_errors_name_the_model_entry() -> None:
    found = problems(entry("a"), entry("b", prefill={"replicas": -1}, decode={"replicas": 0}))
    assert any(p.startswith("models.1.prefill.replicas:") for p in found), found
    assert any(p.startswith("models.1.decode:") for p in found), found
    assert problems() == ["models: expected a non-empty list of models"]
    assert problems("nope") == ["models.0: expected a mapping"]


def test_names_and_keys_are_unique() -> None:
    assert problems(entry("a"), entry("a")) == ["models: two models (or LoRA adapters) have the name 'a'",
                                                "models: two models have the key 'a'"]
    assert problems(entry("Llama 3"), entry("llama-3")) == ["models: two models have the key 'llama-3'"]
    clash = entry("b")
    clash["model"]["key"] = "a"
    assert problems(entry("a"), clash) == ["models: two models have the key 'a'"]
    lora = entry("b", engine=VLLM)
    lora["model"]["adapters"] = [{"name": "a", "path": "/adapters/a"}]
    assert problems(entry("a"), lora) == ["models: two models (or LoRA adapters) have the name 'a'"]


def test_overrides_step_into_the_list() -> None:
    both = deployment(entry("a"), entry("b"), overrides={"models.1.prefill.replicas": 3, "server.port": 0})
    assert (both.models[0].prefill.replicas, both.models[1].prefill.replicas) == (1, 3)
    with pytest.raises(ConfigError, match="not an index"):
        deployment(entry("a"), overrides={"models.4.prefill.replicas": 3})


@pytest.mark.parametrize(("name", "key"), [("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-135m-instruct"),
                                          ("Llama 3.1 (8B)", "llama-3-1-8b"), ("///", "model")])
def test_key_of(name: str, key: str) -> None:
    assert key_of(name) == key
