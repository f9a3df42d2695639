"""Timing arithmetic and profile loading (YAML base, launcher values, arg overrides, strict errors)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from protocol.engine_args import SimArgs
from protocol.sim_profile import ProfileFileError, known_profiles, read_profile
from worker.engines.sim.profile import SimProfile
from worker.engines.sim.timing import StepShape, chunk_attn_pairs, kv_bytes, step_time, transfer_time

P = SimProfile(step_base_s=0.005, prefill_per_token_s=1e-4, prefill_attn_per_pair_s=1e-8,
               decode_per_seq_s=2e-4, decode_per_ctx_token_s=1e-6, block_size=16, kv_bytes_per_token=1000,
               link_bandwidth_bytes_per_s=1e6, link_latency_s=0.01)


def test_attention_pairs_of_a_causal_chunk() -> None:
    assert chunk_attn_pairs(0, 1) == 1
    assert chunk_attn_pairs(0, 4) == 1 + 2 + 3 + 4
    assert chunk_attn_pairs(10, 2) == 11 + 12
    # chunking does not change the total
    assert chunk_attn_pairs(0, 7) + chunk_attn_pairs(7, 5) == chunk_attn_pairs(0, 12)


def test_step_time_adds_each_term() -> None:
    assert step_time(P, StepShape()) == 0.0
    assert step_time(P, StepShape(prefill_tokens=100, prefill_attn_pairs=5050)) == pytest.approx(
        0.005 + 100 * 1e-4 + 5050 * 1e-8)
    assert step_time(P, StepShape(decode_seqs=8, decode_context_tokens=4000)) == pytest.approx(
        0.005 + 8 * 2e-4 + 4000 * 1e-6)
    mixed = StepShape(prefill_tokens=10, prefill_attn_pairs=55, decode_seqs=3, decode_context_tokens=300)
    assert step_time(P, mixed) == pytest.approx(0.005 + 10e-4 + 55e-8 + 6e-4 + 300e-6)


def test_speedup_divides_every_duration() -> None:
    fast = P.model_copy(update={"speedup": 50.0})
    shape = StepShape(prefill_tokens=64, prefill_attn_pairs=2080, decode_seqs=4, decode_context_tokens=900)
    assert step_time(fast, shape) == pytest.approx(step_time(P, shape) / 50)
    assert transfer_time(fast, 12345) == pytest.approx(transfer_time(P, 12345) / 50)


def test_transfer_time_is_latency_plus_bytes_over_bandwidth() -> None:
    assert kv_bytes(P, 3) == 3 * 16 * 1000
    assert transfer_time(P, kv_bytes(P, 3)) == pytest.approx(0.01 + 48000 / 1e6)
    assert transfer_time(P, 0) == 0.0


def test_llama_profile_is_calibrated_as_documented() -> None:
    p = SimArgs(profile="llama-3.1-8b-h100").resolve()
    assert p.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2 == 131072
    one = step_time(p, StepShape(decode_seqs=1, decode_context_tokens=1000))
    assert 0.005 < one < 0.008  # ~6 ms per token at batch 1 (NIM: ~4.5 ms for a tuned build)
    prompt_1k = step_time(p, StepShape(prefill_tokens=1000, prefill_attn_pairs=chunk_attn_pairs(0, 1000)))
    assert 0.03 < prompt_1k < 0.05  # ~25-30k prompt tokens/s
    # a 2k-token prompt moves 268 MB over a 40 GB/s link in under 10 ms
    assert transfer_time(p, 2048 * p.kv_bytes_per_token) < 0.01


def test_profile_args_override_yaml() -> None:
    p = SimArgs(profile="tiny-fast", speedup=10, lease_timeout_s=2).resolve()
    assert p.block_size == 4 and p.speedup == 10.0 and p.lease_timeout_s == 2.0
    assert isinstance(p.speedup, float)
    assert SimArgs().resolve() == SimProfile()


def test_launcher_values_sit_between_the_file_and_the_args() -> None:
    p = SimArgs(profile="tiny-fast", handoff_host="10.0.0.1").resolve({"lease_timeout_s": 9.0, "handoff_host": "h"})
    assert (p.lease_timeout_s, p.handoff_host, p.block_size) == (9.0, "10.0.0.1", 4)


def test_profile_errors_are_reported_together() -> None:
    with pytest.raises(ValidationError) as err:
        SimArgs.model_validate({"profile": "tiny-fast", "bogus": 1, "block_size": "4", "speedup": "1e8"})
    assert sorted(e["loc"][0] for e in err.value.errors()) == ["block_size", "bogus", "speedup"]
    with pytest.raises(ValidationError, match="not found"):
        SimArgs(profile="no-such-profile")
    with pytest.raises(ValidationError, match="greater than 0"):
        SimArgs(num_blocks=0)
    with pytest.raises(ValidationError, match="valid boolean"):
        SimArgs.model_validate({"enable_prefix_caching": 1})
    with pytest.raises(ValidationError, match="eos_token_id 5 must be < vocab_size 5"):
        SimArgs(vocab_size=5, eos_token_id=5).resolve()


def test_a_profile_file_is_checked_on_its_own(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("apiVersion: pdserve.sim/v2\nblock_size: 4\nbogus: 1\nvocab_size: 10\neos_token_id: 10\n")
    with pytest.raises(ProfileFileError) as err:
        read_profile(str(path))
    assert err.value.problems == ["apiVersion: must be 'pdserve.sim/v1', got 'pdserve.sim/v2'",
                                  "bogus: Extra inputs are not permitted"]
    path.write_text("vocab_size: 10\neos_token_id: 10\n")
    with pytest.raises(ProfileFileError, match="eos_token_id 10 must be < vocab_size 10"):
        read_profile(str(path))


@pytest.mark.parametrize("name", known_profiles())
def test_shipped_profiles_are_valid(name: str) -> None:
    assert SimProfile.model_validate(read_profile(name))


def test_effective_max_model_len_fits_the_pool() -> None:
    assert SimProfile(num_blocks=10, block_size=16, max_model_len=4096).effective_max_model_len == 160
