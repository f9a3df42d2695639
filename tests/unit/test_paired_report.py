"""The paired suite's arithmetic: rotation of the order, per-pair ratios, failures left out."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from bench.record import RequestRecord
from bench.suites.common import write_json
from bench.suites.paired import load_records, rotation
from bench.suites.paired_report import PairedRecord, Spread, markdown, median_ci, plot_ratios, summarize


def rec(ttft_s: float, tpot_s: float, tokens: int = 5, ok: bool = True) -> RequestRecord:
    """A streamed answer of ``tokens`` one-token chunks: first at ``ttft_s``, then every ``tpot_s``."""
    times = tuple(ttft_s + i * tpot_s for i in range(tokens))
    return RequestRecord(request_id="r", sent_s=0.0, chunk_times_s=times, e2e_s=times[-1], output_tokens=tokens,
                         status=200 if ok else 502, error=None if ok else "HTTP 502")


def test_rotation_puts_each_target_first_equally_often() -> None:
    names = ["a", "b", "c"]
    orders = [rotation(names, i) for i in range(6)]
    assert orders[:3] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert all(sorted(o) == names for o in orders)
    assert [o[0] for o in orders].count("a") == 2


def test_ratios_are_taken_within_each_pair() -> None:
    # The host slows down in pair 1 for both targets: per-pair ratios stay at 1.1, unlike a ratio of means.
    records = [PairedRecord(0, 0, "x", rec(1.0, 0.110)), PairedRecord(0, 1, "base", rec(1.0, 0.100)),
               PairedRecord(1, 0, "base", rec(2.0, 0.200)), PairedRecord(1, 1, "x", rec(2.2, 0.220))]
    x, base = summarize(records, ["x", "base"], "base")
    assert x.tpot_ratio is not None and x.tpot_ratio.n == 2 and x.tpot_ratio.above_one == 2
    assert x.tpot_ratio.median == pytest.approx(1.1) and x.tpot_ratio.low == pytest.approx(1.1)
    assert x.ttft_ratio is not None and (x.ttft_ratio.low, x.ttft_ratio.high) == pytest.approx((1.0, 1.1))
    assert x.tpot_s == pytest.approx(0.165) and x.itl_p50_s == pytest.approx(0.165)
    assert base.tpot_ratio is None and base.tpot_ratios == () and base.ok == 2


def test_a_failed_request_drops_its_pair_and_is_counted() -> None:
    records = [PairedRecord(0, 0, "x", rec(1.0, 0.1, ok=False)), PairedRecord(0, 1, "base", rec(1.0, 0.1)),
               PairedRecord(1, 0, "x", rec(1.0, 0.09)), PairedRecord(1, 1, "base", rec(1.0, 0.1))]
    x, _ = summarize(records, ["x", "base"], "base")
    assert (x.ok, x.failed) == (1, 1)
    assert x.tpot_ratios == pytest.approx((0.9,)) and x.tpot_ratio is not None and x.tpot_ratio.above_one == 0


def test_unknown_baseline_and_empty_spread_are_refused() -> None:
    with pytest.raises(ValueError, match="baseline"):
        summarize([], ["x"], "base")
    with pytest.raises(ValueError):
        Spread.of([])


def test_markdown_and_plot(tmp_path: Path) -> None:
    records = [PairedRecord(0, 0, "x", rec(1.0, 0.12)), PairedRecord(0, 1, "base", rec(1.0, 0.1))]
    rows = summarize(records, ["x", "base"], "base")
    table = markdown(rows, "base")
    assert ("| x | 1 | 0 | 1,000 | 120.0 | 120.0 | 1.000 [1.00, 1.00]; 0 of 1 above 1 "
            "| 1.200 [1.20, 1.20]; 1 of 1 above 1 |") in table
    assert "| base | 1 | 0 |" in table and table.count("\n") == 4
    assert plot_ratios(tmp_path / "r.png", rows, "base").stat().st_size > 1000


def test_records_round_trip_and_pool_with_shifted_pairs(tmp_path: Path) -> None:
    records = [PairedRecord(0, 1, "x", rec(1.0, 0.12)), PairedRecord(3, 0, "base", rec(1.5, 0.1, ok=False))]
    write_json(tmp_path / "records.json", [asdict(r) for r in records])
    assert load_records(tmp_path) == records
    assert [r.pair for r in load_records(tmp_path, 10_000)] == [10_000, 10_003]


def test_median_interval_uses_binomial_order_statistics() -> None:
    # n = 24: P(Bin(24, 1/2) <= 6) = 0.011 and P(<= 7) = 0.032, so the 7th and 18th smallest values.
    values = [float(v) for v in range(24, 0, -1)]
    assert median_ci(values) == (7.0, 18.0)
    assert median_ci([1.0, 2.0, 3.0, 4.0, 5.0]) is None  # even the extremes cover the median only 94%
    assert median_ci([float(v) for v in range(6)]) == (0.0, 5.0)
    assert Spread.of(values).ci95 == (7.0, 18.0) and Spread.of([1.0]).ci95 is None
