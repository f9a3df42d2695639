"""The cpu_vllm report: medians over rounds with their range, and ratios paired by round."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from bench.suites.cpu_vllm_report import cells, itl_quarter_rows, quarter_medians, ratio_rows, spread


def summary(ttft: float, tpot: float) -> dict[str, object]:
    return {"ttft": {"p50": ttft}, "tpot": {"p50": tpot}}


def test_spread_is_the_median_with_the_lowest_and_highest() -> None:
    assert spread([0.3, 0.1, 0.2]) == "200 [100, 300]"
    assert spread([0.5]) == "500"
    assert spread([None, None]) == "-"
    assert spread([1.04, None, 1.1], 1.0, 2) == "1.07 [1.04, 1.10]"


def test_ratios_pair_each_round_with_the_baselines_same_round() -> None:
    runs = [{"target": t, "workload": "short", "repeat": k, "dir": f"{t}-{k}"}
            for k in (1, 2) for t in ("vllm-1core", "pdserve")]
    summaries = {"vllm-1core-1": summary(1.0, 0.1), "pdserve-1": summary(1.2, 0.1),
                 "vllm-1core-2": summary(2.0, 0.2), "pdserve-2": summary(2.2, 0.25)}
    groups = cells({"runs": runs})
    assert list(groups) == [("vllm-1core", "short"), ("pdserve", "short")]
    # Round 1: 1.2 / 1.0, round 2: 2.2 / 2.0 (not 2.2 / 1.0 across rounds).
    assert ratio_rows(groups, summaries) == [["pdserve", "short", "1.15 [1.10, 1.20]", "1.12 [1.00, 1.25]"]]


def test_ratios_to_the_strict_baseline_leave_both_baselines_out() -> None:
    runs = [{"target": t, "workload": "long", "repeat": 1, "dir": t}
            for t in ("vllm-1core", "vllm-1core-strict", "pdserve")]
    summaries = {"vllm-1core": summary(1.0, 0.1), "vllm-1core-strict": summary(1.0, 0.125),
                 "pdserve": summary(1.1, 0.15)}
    groups = cells({"runs": runs})
    assert ratio_rows(groups, summaries, "vllm-1core-strict") == [["pdserve", "long", "1.10", "1.20"]]
    assert ratio_rows(groups, summaries, "absent-target") == []


def test_quarter_medians_split_an_answer_in_order_and_the_last_takes_the_rest() -> None:
    gaps = [0.3, 0.1, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.2, 0.5, 0.1]  # 14 gaps: 3, 3, 3, 5
    assert quarter_medians(gaps) == [0.2, 0.1, 0.1, 0.2]
    assert quarter_medians([0.1, 0.2, 0.3]) is None


def test_itl_quarters_take_the_median_over_requests_then_over_rounds(tmp_path: Path) -> None:
    def write(run_dir: str, answers: list[list[float]]) -> None:
        (tmp_path / run_dir).mkdir()
        records = [{"ok": True, "itl_s": a} for a in answers] + [{"ok": False, "itl_s": []}]
        with gzip.open(tmp_path / run_dir / "records.json.gz", "wt") as dst:
            json.dump(records, dst)

    slow_start = [0.2, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    write("pdserve-1", [slow_start, slow_start, [0.1] * 8])
    write("pdserve-2", [[0.3, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]])
    runs = [{"target": "pdserve", "workload": "long", "repeat": k, "dir": f"pdserve-{k}"} for k in (1, 2)]
    rows = itl_quarter_rows(tmp_path, cells({"runs": runs}))
    assert rows == [["pdserve", "long", "250 [200, 300]", "100 [100, 100]", "100 [100, 100]", "100 [100, 100]"]]
