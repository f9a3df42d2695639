"""The planner (``bench.planner``): goodput and its bisection, run lengths, split enumeration and the scaled
model, prefix-stable tokenization, and a tiny end-to-end plan on the simulated engine (deterministic)."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import pytest

from bench.metrics import Slo, attainment
from bench.planner import cli
from bench.planner.goodput import RunLength, bisect_rate
from bench.planner.search import Plan, PlanInputs, SplitResult, _hint, recommend
from bench.planner.spec import Split, all_splits, grid_prefill_counts, model_size, refine_prefill_counts
from bench.planner.tokens import PseudoTokenizer, next_turns, token_requests, unit_arrivals
from bench.record import RequestRecord
from bench.workloads import WorkloadParams, generate


def record(ttft_s: float, tpot_s: float, tokens: int = 11) -> RequestRecord:
    e2e = ttft_s + tpot_s * (tokens - 1)
    return RequestRecord("r", 0.0, (ttft_s,), e2e, output_tokens=tokens, status=200)


# --------------------------------------------------------------------------- goodput
def test_goodput_counts_a_request_only_when_it_meets_both_slos() -> None:
    slo = Slo(ttft_s=0.5, tpot_s=0.05)
    good = [record(0.1, 0.01)] * 9
    assert attainment([*good, record(0.6, 0.01)], slo) == pytest.approx(0.9)  # TTFT miss
    assert attainment([*good, record(0.1, 0.06)], slo) == pytest.approx(0.9)  # TPOT miss
    failed = RequestRecord("x", 0.0, error="not finished when the run stopped")
    assert attainment([*good, failed], slo) == pytest.approx(0.9)  # a request never finished is a miss


@pytest.mark.parametrize(("n", "budget"), [(10, 1), (9, 0), (200, 20), (256, 25), (1, 0)])
def test_miss_budget_is_the_most_misses_that_still_reach_90_percent(n: int, budget: int) -> None:
    inputs = PlanInputs(None, None, None, Slo(1, 1), (1.0,))  # type: ignore[arg-type]
    assert inputs.miss_budget(n) == budget
    assert (n - budget) / n >= 0.9 and (budget == n or (n - budget - 1) / n < 0.9)


# --------------------------------------------------------------------------- bisection
@pytest.mark.parametrize("start", [1.0, 37.0, 500.0])
def test_bisection_finds_the_highest_passing_rate_within_tolerance(start: float) -> None:
    capacity = 37.3
    found = bisect_rate(lambda r: r <= capacity, start, rel_tol=0.05)
    assert capacity / 1.05 <= found.goodput <= capacity
    passed = [r for r, ok in found.probes if ok]
    failed = [r for r, ok in found.probes if not ok]
    assert max(passed) == found.goodput and min(failed) <= found.goodput * 1.05
    assert len(found.probes) <= 12


def test_bisection_from_a_good_hint_costs_fewer_probes() -> None:
    far = bisect_rate(lambda r: r <= 100.0, 10.0, first_step=2.0)
    near = bisect_rate(lambda r: r <= 100.0, 95.0, first_step=1.25)
    assert len(near.probes) < len(far.probes)
    assert near.goodput == pytest.approx(far.goodput, rel=0.06)


def test_bisection_limits() -> None:
    assert bisect_rate(lambda r: False, 10.0, min_rate=0.5).goodput == 0.0
    assert bisect_rate(lambda r: True, 10.0, max_rate=1000.0).goodput == 1000.0
    with pytest.raises(ValueError):
        bisect_rate(lambda r: True, 0.0)


def test_run_length_covers_the_duration_and_is_shared_by_nearby_rates() -> None:
    length = RunLength(duration_s=8.0, min_requests=200)
    assert 200 <= length.requests_at(1.0) == length.requests_at(2.0) <= 200 * 2 ** 0.25 + 1
    for rate in (30.0, 31.0, 100.0, 1234.5):
        assert rate * 8.0 <= length.requests_at(rate) <= rate * 8.0 * 2 ** 0.25 + 1
    assert length.requests_at(30.0) == length.requests_at(31.0)
    assert RunLength(fixed=123).requests_at(1e6) == 123


# --------------------------------------------------------------------------- splits
def test_split_enumeration_and_labels() -> None:
    assert [s.label for s in all_splits(4)] == ["1P:3D", "2P:2D", "3P:1D", "colocated x4"]
    assert all_splits(1) == [Split(0, 1)] and all_splits(3, colocated=False) == [Split(1, 2), Split(2, 1)]
    with pytest.raises(ValueError):
        Split(2, 0)


def test_grid_and_refinement_cover_the_best_neighbourhood() -> None:
    grid = grid_prefill_counts(64, 16)
    assert len(grid) == 16 and grid[0] == 1 and grid[-1] == 63
    assert grid_prefill_counts(8, 16) == list(range(1, 8))
    best = grid[5]
    more = refine_prefill_counts(best, grid, 64)
    assert more == [p for p in range(grid[4] + 1, grid[6]) if p != best]
    assert refine_prefill_counts(1, [1, 5], 8) == [2, 3, 4]


def test_scaled_model_maps_back_to_the_fleet() -> None:
    assert model_size(16, 16) == 16 and model_size(64, 16) == 16 and model_size(50, 16) == 12
    result = SplitResult(Split(3, 13), 100.0, (), (), 1, 1, 0.0)
    plan = Plan(16, (result,), result, scale=4.0, fleet_workers=64)
    assert plan.fleet_split(Split(3, 13)) == Split(12, 52)
    assert plan.fleet_split(Split(0, 16)) == Split(0, 64)
    assert plan.fleet_split(Split(15, 1)) == Split(60, 4)


def test_hints_and_recommendation() -> None:
    assert _hint({1: 10.0, 3: 40.0}, 2) == pytest.approx(20.0)
    assert _hint({1: 10.0}, 2) == 10.0 and _hint({1: 0.0, 3: 5.0}, 2) is None

    def result(p: int, goodput: float) -> SplitResult:
        return SplitResult(Split(p, 8 - p), goodput, (), (), 1, 1, 0.0)

    assert recommend([result(1, 5.0), result(2, 9.0), result(3, 9.0)]).split == Split(2, 6)


# --------------------------------------------------------------------------- tokens
def test_chat_prompts_are_prefix_stable_and_in_the_vocabulary() -> None:
    specs = generate("chat", WorkloadParams(num_requests=8, turns=4, sessions=2, system_words=40), 0)
    reqs = token_requests(specs, PseudoTokenizer(), vocab_size=1000)
    by_session: dict[str, list[tuple[int, ...]]] = {}
    for r in reqs:
        assert r.prompt and max(r.prompt) < 1000 and min(r.prompt) >= 0
        by_session.setdefault(r.session or "", []).append(r.prompt)
    for prompts in by_session.values():
        for before, after in itertools.pairwise(prompts):
            assert after[:len(before)] == before and len(after) > len(before)
    assert next_turns(reqs) == {0: 2, 1: 3, 2: 4, 3: 5, 4: 6, 5: 7}
    # ~3.2 tokens per bench pseudo-word, as SmolLM2's tokenizer gives
    words = " ".join(specs[0].messages[0].content.split()[:1000]) if specs[0].messages else ""
    assert 2.5 <= len(PseudoTokenizer().encode(words)) / len(words.split()) <= 4.0


def test_unit_arrivals_are_seeded_and_keep_trace_timestamps() -> None:
    specs = generate("unique", WorkloadParams(num_requests=50), 0)
    reqs = token_requests(specs, PseudoTokenizer(), vocab_size=1000)
    a, b = unit_arrivals(reqs, 1), unit_arrivals(reqs, 1)
    assert a == b and a[0] == 0.0 and a == sorted(a) and 20 < a[-1] < 90
    stamps = [3.0 + i * i / 10 for i in range(len(reqs))]  # a trace speeding down: its shape is kept
    rescaled = unit_arrivals([replace(r, offset_s=t) for r, t in zip(reqs, stamps, strict=True)], 0)
    assert rescaled[0] == 0.0 and rescaled[-1] == pytest.approx(len(reqs) - 1)
    assert rescaled[1] - rescaled[0] < rescaled[-1] - rescaled[-2]


# --------------------------------------------------------------------------- end to end
TRACE = "\n".join(json.dumps({"prompt_words": 40 + 7 * i, "max_tokens": 6}) for i in range(30))


def run_plan(tmp_path: Path, name: str, jobs: int = 1) -> tuple[dict[str, object], str]:
    trace = tmp_path / "trace.jsonl"
    trace.write_text(TRACE + "\n")
    out = tmp_path / name
    rc = cli.main(["--workers", "4", "--workload", "trace", "--trace", str(trace), "--rate", "20",
                   "--slo-ttft-ms", "100", "--slo-tpot-ms", "15", "--rel-tol", "0.2", "--no-plot",
                   "--jobs", str(jobs), "--out", str(out)])
    assert rc == 0
    return json.loads((out / "plan.json").read_text()), (out / "plan.md").read_text()


def test_a_tiny_plan_is_a_table_of_every_split_and_repeats_exactly(tmp_path: Path) -> None:
    first, text = run_plan(tmp_path, "a")
    second, _ = run_plan(tmp_path, "b", jobs=2)  # forked workers give the same plan
    splits = first["splits"]
    assert isinstance(splits, list)
    assert [s["split"] for s in splits] == ["1P:3D", "2P:2D", "3P:1D", "colocated x4"]
    assert all(s["goodput_req_s"] > 0 and len(s["at_rates"]) == 1 for s in splits)
    assert first["recommended"] in {s["split"] for s in splits}
    best = max(splits, key=lambda s: s["goodput_req_s"])
    assert best["goodput_req_s"] == first["goodput_req_s"]
    for key in ("splits", "recommended", "scale_commands", "check_splits"):
        assert first[key] == second[key]
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 4 and "<- recommended" in text
    assert any(line.startswith("pdserve scale decode") for line in text.splitlines())
