"""Strict YAML config: defaults, every error at once with its path, ``--set`` overrides."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import ConfigError, PdserveConfig, load_config, parse_config, parse_overrides
from orchestrator.deployment import load_deployment

REPO = Path(__file__).resolve().parents[2]
MINIMAL: dict[str, Any] = {"apiVersion": "pdserve/v1", "model": {"name": "m", "path": "/models/m"}}


def problems(raw: Any, overrides: dict[str, Any] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "test.yaml", overrides)
    assert str(info.value).startswith(f"test.yaml: {len(info.value.problems)} problem(s)")
    return info.value.problems


def test_minimal_config_gets_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.engine.kind == "vllm"
    assert (config.prefill.replicas, config.decode.replicas) == (1, 1)
    assert config.server.host == "127.0.0.1"
    assert config.transfer.lease_timeout_s == 30
    assert config.prefill.routing.resolve().name  # the default preset resolves


def test_config_is_frozen() -> None:
    config = parse_config(MINIMAL)
    with pytest.raises(Exception, match="frozen"):
        config.server.port = 1  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_shipped_configs_are_valid(name: str) -> None:
    deployment = load_deployment(REPO / "configs" / name)
    assert all(isinstance(model, PdserveConfig) for model in deployment)


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    raw = {
        "apiVersion": "pdserve/v2",
        "model": {"name": "m", "bogus": 1},
        "prefill": {"replicas": -1, "routing": {"profile": "nope"}},
        "decode": {"replicas": 0},
        "server": {"port": 70000, "prefill_timeout_s": 0},
        "colour": "blue",
    }
    found = problems(raw)
    expected_paths = ["apiVersion", "model.path", "model.bogus", "prefill.replicas", "prefill.routing.profile",
                      "decode", "server.port", "server.prefill_timeout_s", "colour"]
    paths = [p.split(": ", 1)[0] for p in found]
    assert sorted(paths) == sorted(expected_paths), found
    by_path = dict(p.split(": ", 1) for p in found)
    assert "Extra inputs are not permitted" in by_path["colour"]
    assert "Extra inputs are not permitted" in by_path["model.bogus"]
    assert "unknown routing preset 'nope'" in by_path["prefill.routing.profile"]
    assert "at least one replica" in by_path["decode"]


def test_explicit_profile_errors_point_into_the_profile() -> None:
    raw = {**MINIMAL, "prefill": {"routing": {"profile": {"name": "p", "picker": "nope", "bad": 1}}}}
    found = problems(raw)
    assert sorted(p.split(": ", 1)[0] for p in found) == ["prefill.routing.profile.bad",
                                                         "prefill.routing.profile.picker"], found
    assert any("unknown picker 'nope'" in p for p in found)


def test_explicit_profile_is_accepted() -> None:
    raw = {**MINIMAL, "prefill": {"routing": {"profile": {"name": "p", "scorers": [{"name": "kv_aware"}]}}}}
    profile = parse_config(raw).prefill.routing.resolve()
    assert profile.name == "p" and [s.name for s in profile.scorers] == ["kv_aware"]


def test_profile_of_the_wrong_type_is_one_clear_problem() -> None:
    found = problems({**MINIMAL, "decode": {"routing": {"profile": 3}}})
    assert len(found) == 1 and found[0].startswith("decode.routing.profile: "), found


@pytest.mark.parametrize(("raw", "expected"), [
    (None, "<root>: expected a mapping"),
    ([1, 2], "<root>: expected a mapping"),
])
def test_root_must_be_a_mapping(raw: Any, expected: str) -> None:
    assert problems(raw) == [expected]


def test_yaml_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("apiVersion: pdserve/v1\nmodel: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems[0].startswith("<yaml>: ")
    assert str(path) in str(info.value)


def test_load_config_reports_problems_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("apiVersion: pdserve/v1\nmodel: {name: m, path: /m}\nprefill: {replicas: x, extra: 1}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: 2 problem(s)")
    assert sorted(p.split(":")[0] for p in info.value.problems) == ["prefill.extra", "prefill.replicas"]


@pytest.mark.parametrize(("items", "expected"), [
    (["prefill.replicas=2"], {"prefill.replicas": 2}),
    (["server.host= 127.0.0.2 "], {"server.host": "127.0.0.2"}),
    (["colocated=true"], {"colocated": True}),
    (["transfer.link_bandwidth_gbps=2.5"], {"transfer.link_bandwidth_gbps": 2.5}),
    (["ray.address=null", "ray.address="], {"ray.address": None}),
    (["engine.args={a: 1, b: [1, 2]}"], {"engine.args": {"a": 1, "b": [1, 2]}}),
    (["model.name=a=b"], {"model.name": "a=b"}),
    (["model.name='007'"], {"model.name": "007"}),
    ([" model.path =/x"], {"model.path": "/x"}),
    ([], {}),
])
def test_parse_overrides(items: list[str], expected: dict[str, Any]) -> None:
    assert parse_overrides(items) == expected


@pytest.mark.parametrize("item", ["replicas", "=3", ""])
def test_parse_overrides_rejects_items_without_key_or_value(item: str) -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides([item])


def test_overrides_apply_to_nested_and_missing_sections() -> None:
    overrides = parse_overrides(["prefill.replicas=3", "server.port=0", "decode.routing.profile=decode",
                                 "engine.args.max_model_len=512"])
    config = parse_config(MINIMAL, overrides=overrides)
    assert config.prefill.replicas == 3
    assert config.server.port == 0
    assert config.decode.routing.profile == "decode"
    assert config.engine.args.max_model_len == 512
    assert config.engine.args.engine_kwargs() == {"max_model_len": 512}


def test_overrides_are_validated_like_the_file() -> None:
    found = problems(MINIMAL, parse_overrides(["prefill.replicas=many", "server.bogus=1"]))
    assert sorted(p.split(":")[0] for p in found) == ["prefill.replicas", "server.bogus"]


def test_override_through_a_scalar_fails_with_its_path() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL, overrides={"model.name.first": "x"})
    assert info.value.problems == ["model.name.first: name is not a mapping"]


def test_overrides_do_not_mutate_the_loaded_tree() -> None:
    raw = copy.deepcopy({**MINIMAL, "prefill": {"replicas": 1}})
    before = copy.deepcopy(raw)
    assert parse_config(raw, overrides={"prefill.replicas": 4, "model.name": "x"}).prefill.replicas == 4
    assert raw == before
    assert parse_config(raw).prefill.replicas == 1


def test_model_path_expands_user_and_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PDSERVE_TEST_ROOT", "/data")
    monkeypatch.setenv("HOME", "/home/someone")
    config = parse_config({**MINIMAL, "model": {"name": "m", "path": "$PDSERVE_TEST_ROOT/models/m"}})
    assert config.model.resolved_path == Path("/data/models/m")
    config = parse_config({**MINIMAL, "model": {"name": "m", "path": "~/m"}})
    assert config.model.resolved_path == Path("/home/someone/m")
