"""Typed engine arguments in the config: every typo fails ``pdserve config check`` with its path."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, get_args

import pytest

import protocol.engine_args as engine_args
from orchestrator.cli import main as pdserve
from orchestrator.config import ConfigError, parse_config
from protocol.engine_args import SimArgs, VllmArgs, vllm_engine_arg_names

MINIMAL: dict[str, Any] = {"apiVersion": "pdserve/v1", "model": {"name": "m", "path": "/models/m"}}
TINY_PROFILE = Path(__file__).resolve().parents[2] / "configs" / "sim-profiles" / "tiny-fast.yaml"


def problems(**sections: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, **sections}, "test.yaml")
    return info.value.problems


def config_check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "pdserve.yaml"
    path.write_text("apiVersion: pdserve/v1\nmodel: {name: m, path: /models/m}\n" + text)
    code = pdserve(["config", "check", str(path)])
    return code, capsys.readouterr().err


@pytest.fixture
def vllm_names() -> frozenset[str]:
    names = vllm_engine_arg_names()
    if names is None:
        pytest.skip("vLLM is not importable here")
    return names


def test_config_check_names_a_vllm_typo_by_its_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = config_check(tmp_path, "engine:\n  kind: vllm\n  args: {dtype: float32, max_num_seqz: 8}\n", capsys)
    assert code == 2
    assert "engine.args.max_num_seqz: Extra inputs are not permitted" in err
    assert err.startswith(f"{tmp_path / 'pdserve.yaml'}: 1 problem(s)")


def test_config_check_names_a_sim_typo_by_its_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = config_check(tmp_path, "engine:\n  kind: sim\n  args: {profile: tiny-fast, vocab_sise: 8}\n", capsys)
    assert code == 2 and "engine.args.vocab_sise: Extra inputs are not permitted" in err


def test_config_check_names_a_pool_typo_by_its_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = config_check(tmp_path, "prefill:\n  engine_args: {max_num_seqz: 8}\n", capsys)
    assert code == 2 and "prefill.engine_args.max_num_seqz: Extra inputs are not permitted" in err


def test_every_engine_args_problem_at_once() -> None:
    found = problems(engine={"kind": "vllm", "args": {"max_num_seqz": 8, "max_num_seqs": "16", "dtype": "fp7"}},
                     prefill={"engine_args": {"enforce_eagre": True}}, decode={"engine_args": {"seed": 1.5}})
    assert sorted(p.split(": ", 1)[0] for p in found) == [
        "decode.engine_args.seed", "engine.args.dtype", "engine.args.max_num_seqs", "engine.args.max_num_seqz",
        "prefill.engine_args.enforce_eagre"], found


def test_sim_pool_args_are_sim_profile_fields() -> None:
    found = problems(engine={"kind": "sim", "args": {"profile": "tiny-fast"}},
                     decode={"engine_args": {"num_blockz": 8, "speedup": 0}})
    assert sorted(found) == ["decode.engine_args.num_blockz: Extra inputs are not permitted",
                             "decode.engine_args.speedup: Input should be greater than 0"], found


def test_the_lease_has_one_name() -> None:
    found = problems(engine={"kind": "sim", "args": {"kv_lease_s": 2}})
    assert found == ["engine.args.kv_lease_s: Extra inputs are not permitted"]
    assert problems(transfer={"kv_lease_s": 2}) == ["transfer.kv_lease_s: Extra inputs are not permitted"]


def test_unknown_sim_profile_name_fails_config_load() -> None:
    (found,) = problems(engine={"kind": "sim", "args": {"profile": "no-such-profile"}})
    assert found.startswith("engine.args.profile: ") and "no-such-profile.yaml: not found" in found
    assert "tiny-fast" in found  # the known profiles are listed


def test_unknown_key_inside_a_profile_file_fails_config_check(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "mine.yaml"
    profile.write_text(TINY_PROFILE.read_text() + "num_blockz: 12\nspeedup: fast\n")
    code, err = config_check(tmp_path, f"engine:\n  kind: sim\n  args: {{profile: {profile}}}\n", capsys)
    assert code == 2
    assert f"engine.args.profile: {profile}: num_blockz: Extra inputs are not permitted" in err
    assert f"engine.args.profile: {profile}: speedup: Input should be a valid number" in err


def test_a_profile_file_from_tmp_path_is_accepted(tmp_path: Path) -> None:
    profile = tmp_path / "mine.yaml"
    profile.write_text(TINY_PROFILE.read_text().replace("num_blocks: 64", "num_blocks: 96"))
    config = parse_config({**MINIMAL, "engine": {"kind": "sim", "args": {"profile": str(profile)}}})
    assert isinstance(config.engine.args, SimArgs) and config.engine.args.resolve().num_blocks == 96


def test_sim_args_and_pool_args_must_give_a_valid_profile() -> None:
    found = problems(engine={"kind": "sim", "args": {"profile": "tiny-fast"}},
                     decode={"engine_args": {"eos_token_id": 5000}})
    assert found == ["decode.engine_args: the sim profile these arguments give is invalid: "
                     "eos_token_id 5000 must be < vocab_size 1000"], found


def test_pool_args_of_another_kind_fail() -> None:
    found = problems(engine={"kind": "sim"}, prefill={"engine_args": {"kind": "vllm", "dtype": "float32"}})
    assert found == ["prefill.engine_args.kind: must match engine.kind 'sim'"]


def test_unknown_engine_kind_fails() -> None:
    found = problems(engine={"kind": "tgi"})
    assert found == ["engine: unknown engine kind; expected kind: one of vllm, sim"]


def test_unknown_vllm_pass_through_arg_fails_when_vllm_is_importable(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], vllm_names: frozenset[str]) -> None:
    text = "engine:\n  args:\n    extra_args: {kv_cache_dtype: auto, no_such_arg: 1}\n"
    code, err = config_check(tmp_path, text, capsys)
    assert code == 2 and "1 problem(s)" in err
    assert "engine.args.extra_args.no_such_arg: 'no_such_arg' is not an engine argument of the installed vLLM" in err
    found = problems(prefill={"engine_args": {"extra_args": {"max_num_seqz": 2}}})
    assert [p.split(": ", 1)[0] for p in found] == ["prefill.engine_args.extra_args.max_num_seqz"]


def test_known_vllm_pass_through_args_reach_the_engine_kwargs(vllm_names: frozenset[str]) -> None:
    engine = {"args": {"dtype": "float32", "extra_args": {"kv_cache_dtype": "auto"}}}
    config = parse_config({**MINIMAL, "engine": engine,
                           "prefill": {"engine_args": {"extra_args": {"max_logprobs": 5}}}})
    prefill, decode = config.engine_args_for(config.prefill), config.engine_args_for(config.decode)
    assert isinstance(prefill, VllmArgs) and isinstance(decode, VllmArgs)
    assert prefill.engine_kwargs() == {"dtype": "float32", "kv_cache_dtype": "auto", "max_logprobs": 5}
    assert decode.engine_kwargs() == {"dtype": "float32", "kv_cache_dtype": "auto"}


def test_pass_through_args_are_accepted_unchecked_without_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_args, "vllm_engine_arg_names", lambda: None)
    args = VllmArgs(extra_args={"some_future_arg": [1, 2]})
    assert args.engine_kwargs() == {"some_future_arg": [1, 2]}


def test_pass_through_may_not_shadow_typed_or_pdserve_args(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_args, "vllm_engine_arg_names", lambda: None)
    found = problems(engine={"args": {"extra_args": {"dtype": "float32", "kv_transfer_config": {}}}})
    assert sorted(found) == [
        "engine.args.extra_args.dtype: 'dtype' is a typed engine argument: set it next to extra_args",
        "engine.args.extra_args.kv_transfer_config: 'kv_transfer_config' is set by pdserve itself"], found


def test_typed_vllm_args_are_fields_of_the_installed_vllm(vllm_names: frozenset[str]) -> None:
    assert VllmArgs.typed_names() <= vllm_names
    assert engine_args.VLLM_ARGS_SET_BY_PDSERVE <= vllm_names  # noqa: SIM300
    from vllm.engine.arg_utils import AsyncEngineArgs

    vllm_dtypes = get_args({f.name: f.type for f in dataclasses.fields(AsyncEngineArgs)}["dtype"])
    (ours, _none) = get_args(VllmArgs.model_fields["dtype"].annotation)
    assert set(get_args(ours)) <= set(vllm_dtypes)
