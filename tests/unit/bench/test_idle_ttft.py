"""The idle_ttft suite's table: one row per pause, medians and ranges of that pause's samples only."""

from __future__ import annotations

from bench.suites.idle_ttft import table


def test_rows_are_per_pause_medians_and_ranges() -> None:
    samples = [(0.0, 700.0), (3.0, 1100.0), (0.0, 800.0), (3.0, 1300.0), (0.0, 760.0), (3.0, 1200.0)]
    rows = table(samples, [0.0, 3.0]).splitlines()[2:]
    assert rows == ["| 0 | 3 | 760 | 700 | 800 |", "| 3 | 3 | 1,200 | 1,100 | 1,300 |"]
