"""LoRA adapters: config checks, the launch plan's adapter specs, the vLLM keywords that enable them, the
per-call lookup, and the test adapter's files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import ConfigError, parse_config
from orchestrator.launch.plan import plan_processes
from orchestrator.model_prep import prepare_tiny_lora
from protocol.launch import AdapterSpec
from worker.engines.vllm_lora import LoraRequests, lora_engine_kwargs

ADAPTERS = [{"name": "pirate", "path": "/adapters/pirate"}, {"name": "poet", "path": "/adapters/poet"}]


def config(engine: str = "vllm", adapters: list[dict[str, Any]] | None = None) -> Any:
    return parse_config({"apiVersion": "pdserve/v1", "engine": {"kind": engine},
                         "model": {"name": "m", "path": "/m", "adapters": ADAPTERS if adapters is None else adapters}})


def adapter(tmp_path: Path, name: str, rank: int) -> AdapterSpec:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"r": rank}))
    return AdapterSpec(name=name, adapter_id=len(list(tmp_path.iterdir())), path=str(folder))


def test_every_worker_of_the_model_serves_its_adapters_with_ids_from_one() -> None:
    specs = [w.engine for p in plan_processes(config(), "r") for w in p.workers]
    assert len(specs) == 2
    for spec in specs:
        assert [(a.name, a.adapter_id, a.path) for a in spec.adapters] == [
            ("pirate", 1, "/adapters/pirate"), ("poet", 2, "/adapters/poet")]


def test_adapters_need_vllm_and_names_of_their_own() -> None:
    with pytest.raises(ConfigError, match="LoRA adapters need vLLM workers"):
        config(engine="sim")
    with pytest.raises(ConfigError, match="'m' is used twice"):
        config(adapters=[{"name": "m", "path": "/a"}])
    with pytest.raises(ConfigError, match="'a' is used twice"):
        config(adapters=[{"name": "a", "path": "/a"}, {"name": "a", "path": "/b"}])


def test_engine_keywords_fit_the_largest_rank(tmp_path: Path) -> None:
    assert lora_engine_kwargs([]) == {}
    small, large = adapter(tmp_path, "a", 4), adapter(tmp_path, "b", 12)
    assert lora_engine_kwargs([small]) == {"enable_lora": True, "max_loras": 1, "max_lora_rank": 8}
    assert lora_engine_kwargs([small, large]) == {"enable_lora": True, "max_loras": 2, "max_lora_rank": 16}
    with pytest.raises(ValueError, match="above vLLM's largest"):
        lora_engine_kwargs([adapter(tmp_path, "c", 1024)])
    with pytest.raises(ValueError, match=r"no readable adapter_config\.json"):
        lora_engine_kwargs([AdapterSpec(name="d", adapter_id=9, path=str(tmp_path / "missing"))])


def test_a_call_naming_another_adapter_is_refused(tmp_path: Path) -> None:
    requests = LoraRequests([adapter(tmp_path, "pirate", 8)])
    assert requests.get(None) is None
    built = requests.get("pirate")
    assert (built.lora_name, built.lora_int_id, built.lora_path) == ("pirate", 1, str(tmp_path / "pirate"))
    assert requests.get("pirate") is built
    with pytest.raises(ValueError, match="'poet' is not served by this worker"):
        requests.get("poet")


def test_the_test_adapter_is_a_peft_folder_of_rank_8(tmp_path: Path) -> None:
    from safetensors import safe_open

    folder = prepare_tiny_lora(tmp_path / "lora")
    settings = json.loads((folder / "adapter_config.json").read_text())
    assert (settings["peft_type"], settings["r"], settings["target_modules"]) == ("LORA", 8, ["q_proj", "v_proj"])
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as weights:
        keys = set(weights.keys())
        assert weights.get_tensor("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight").shape == (32, 8)
    assert len(keys) == 8 and all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys)


def test_the_test_adapter_is_built_once(tmp_path: Path) -> None:
    folder = prepare_tiny_lora(tmp_path / "lora")
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(b"left as it is")  # a rebuild would write the tensors again
    assert prepare_tiny_lora(tmp_path / "lora") == folder
    assert weights.read_bytes() == b"left as it is"
