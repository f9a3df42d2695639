"""Pool profile models: strict parsing, every error at once, YAML examples, presets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from orchestrator.scheduler.profiles import PRESETS, PoolProfile, build_pipeline, preset
from orchestrator.scheduler.registry import FILTERS, PICKERS, SCORERS

EXAMPLES = sorted((Path(__file__).parents[3] / "configs" / "examples" / "policies").glob("*.yaml"))


def test_unknown_top_level_key_fails() -> None:
    with pytest.raises(ValidationError, match=r"extra_forbidden|Extra inputs"):
        PoolProfile.model_validate({"name": "p", "scorer": []})


@pytest.mark.parametrize("bad", [
    {"name": "p", "scorers": [{"name": "prefix", "wieght": 1}]},
    {"name": "p", "scorers": [{"name": "prefx"}]},
    {"name": "p", "scorers": [{"name": "kv_aware", "params": {"tokens_per_s": 5}}]},
    {"name": "p", "scorers": [{"name": "kv_aware", "params": {"default_tokens_per_s": 0}}]},
    {"name": "p", "scorers": [{"name": "prefix", "weight": -1}]},
    {"name": "p", "filters": ["healthy", "sick"]},
    {"name": "p", "picker": {"name": "softmax", "params": {"temperature": -0.1}}},
    {"name": "p", "picker": "first"},
    {"name": ""},
])
def test_bad_profiles_fail(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PoolProfile.model_validate(bad)


def test_every_error_is_reported_at_once_with_its_path() -> None:
    with pytest.raises(ValidationError) as info:
        PoolProfile.model_validate({"name": "p", "extra": 1, "filters": ["nope"],
                                    "scorers": [{"name": "prefix"}, {"name": "x"}], "picker": "y"})
    locs = {tuple(e["loc"]) for e in info.value.errors()}
    assert locs == {("extra",), ("filters", 0), ("scorers", 1), ("picker",)}


def test_profiles_are_frozen() -> None:
    with pytest.raises(ValidationError):
        PRESETS["prefix"].name = "x"  # type: ignore[misc]


def test_bare_names_and_defaults() -> None:
    profile = PoolProfile.model_validate({"name": "p", "filters": ["healthy"], "picker": "round_robin"})
    assert profile.filters[0].name == "healthy" and profile.picker.name == "round_robin"
    assert PoolProfile(name="q").picker.name == "max_score"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_yaml_examples_parse_and_build(path: Path) -> None:
    profile = PoolProfile.model_validate(yaml.safe_load(path.read_text()))
    assert build_pipeline(profile).name == profile.name


def test_every_plugin_has_a_yaml_example() -> None:
    used: set[tuple[str, str]] = set()
    for path in EXAMPLES:
        profile = PoolProfile.model_validate(yaml.safe_load(path.read_text()))
        used |= {("filter", f.name) for f in profile.filters} | {("scorer", s.name) for s in profile.scorers}
        used.add(("picker", profile.picker.name))
    everything = ({("filter", n) for n in FILTERS.names} | {("scorer", n) for n in SCORERS.names}
                  | {("picker", n) for n in PICKERS.names})
    assert everything <= used, everything - used


def test_presets_build_and_unknown_preset_fails() -> None:
    for name, profile in PRESETS.items():
        assert profile.name == name
        build_pipeline(profile)
    with pytest.raises(KeyError, match="known"):
        preset("fastest")
