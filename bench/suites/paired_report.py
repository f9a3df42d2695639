"""The paired suite's report: per-pair ratios of each target to a baseline, from the requests' records.

Pure over the records (``PairedRecord``): ``summarize`` gives each target's medians and, per pair, its
TTFT and TPOT over the baseline's on the same prompt; ``markdown`` and ``plot_ratios`` render that.
A pair where either request failed is left out of the ratios and counted.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from bench import metrics
from bench.record import RequestRecord
from bench.suites.report_util import markdown_table, ms, percentile, save

LatencyFn = Callable[[RequestRecord], float | None]


@dataclass(frozen=True)
class PairedRecord:
    """One request of a pair: which pair (prompt), its place in that pair's order, the target, the record."""

    pair: int
    position: int
    target: str
    record: RequestRecord


def median_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free confidence interval for the median: the order statistics ``k`` and
    ``n - k + 1`` for the largest ``k`` with P(Binomial(n, 1/2) < k) <= (1 - level) / 2. ``None`` when
    there are too few values for that level (fewer than 6 at 95%)."""
    xs, n = sorted(values), len(values)
    alpha, below, k = (1 - level) / 2, 0.0, 0
    while k < n and below + math.comb(n, k) / 2**n <= alpha:
        below += math.comb(n, k) / 2**n
        k += 1
    return (xs[k - 1], xs[n - k]) if k else None


@dataclass(frozen=True)
class Spread:
    """Median with the lowest and highest value, a 95% interval for the median (``None`` under 6
    values), and how many values were above 1 (for ratios)."""

    median: float
    low: float
    high: float
    ci95: tuple[float, float] | None
    above_one: int
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """Raises ``ValueError`` for no values."""
        if not values:
            raise ValueError("no values")
        return cls(statistics.median(values), min(values), max(values), median_ci(values),
                   sum(v > 1 for v in values), len(values))


@dataclass(frozen=True)
class TargetSummary:
    """One target over the run: medians of its own requests, and its ratios to the baseline per pair
    (``None`` for the baseline itself)."""

    target: str
    ok: int
    failed: int
    ttft_s: float | None
    tpot_s: float | None
    itl_p50_s: float | None
    ttft_ratio: Spread | None
    tpot_ratio: Spread | None
    tpot_ratios: tuple[float, ...]


def _by_pair(records: Sequence[PairedRecord], target: str) -> dict[int, RequestRecord]:
    return {r.pair: r.record for r in records if r.target == target and r.record.ok}


def _ratios(mine: dict[int, RequestRecord], base: dict[int, RequestRecord],
            fn: LatencyFn) -> list[float]:
    out = []
    for pair in sorted(mine.keys() & base.keys()):
        a, b = fn(mine[pair]), fn(base[pair])
        if a is not None and b:
            out.append(a / b)
    return out


def summarize(records: Sequence[PairedRecord], targets: Sequence[str], baseline: str) -> list[TargetSummary]:
    """One summary per target, in ``targets`` order. ``baseline`` must be one of ``targets``."""
    if baseline not in targets:
        raise ValueError(f"baseline {baseline!r} is not among the targets {list(targets)}")
    base = _by_pair(records, baseline)
    rows = []
    for target in targets:
        mine = _by_pair(records, target)
        done = list(mine.values())
        itl = [statistics.median(gaps) for rec in done if (gaps := metrics.itls(rec))]
        ttft_r = _ratios(mine, base, metrics.ttft) if target != baseline else []
        tpot_r = _ratios(mine, base, metrics.tpot) if target != baseline else []
        rows.append(TargetSummary(
            target=target, ok=len(done), failed=sum(r.target == target and not r.record.ok for r in records),
            ttft_s=percentile([v for rec in done if (v := metrics.ttft(rec)) is not None], 50),
            tpot_s=percentile([v for rec in done if (v := metrics.tpot(rec)) is not None], 50),
            itl_p50_s=percentile(itl, 50),
            ttft_ratio=Spread.of(ttft_r) if ttft_r else None, tpot_ratio=Spread.of(tpot_r) if tpot_r else None,
            tpot_ratios=tuple(tpot_r)))
    return rows


def _spread(s: Spread | None) -> str:
    if s is None:
        return "-"
    ci = "" if s.ci95 is None else f"; median's 95% CI [{s.ci95[0]:.2f}, {s.ci95[1]:.2f}]"
    return f"{s.median:.3f} [{s.low:.2f}, {s.high:.2f}]{ci}; {s.above_one} of {s.n} above 1"


def markdown(rows: Sequence[TargetSummary], baseline: str) -> str:
    """The results table: medians over each target's requests, then ratios to ``baseline`` per pair:
    median [lowest, highest], the median's 95% interval, and the pairs above 1."""
    header = ["target", "ok", "failed", "TTFT p50 (ms)", "TPOT p50 (ms)", "ITL p50 (ms)", f"TTFT / {baseline}",
              f"TPOT / {baseline}"]
    rows_text = [[r.target, r.ok, r.failed, ms(r.ttft_s), ms(r.tpot_s, digits=1), ms(r.itl_p50_s, digits=1),
                  _spread(r.ttft_ratio), _spread(r.tpot_ratio)] for r in rows]
    return markdown_table(header, rows_text, "lrrrrrll") + "\n"


def plot_ratios(path: Path, rows: Sequence[TargetSummary], baseline: str) -> Path:
    """Each pair's TPOT ratio to the baseline, one column of points per target, medians marked."""
    shown = [r for r in rows if r.tpot_ratios]
    fig = Figure(figsize=(1.8 + 1.6 * max(len(shown), 1), 4.5))
    ax = fig.subplots()
    for i, row in enumerate(shown):
        n = len(row.tpot_ratios)
        xs = [i + (j - (n - 1) / 2) * 0.3 / max(n, 1) for j in range(n)]
        ax.scatter(xs, row.tpot_ratios, s=14, alpha=0.7)
        if row.tpot_ratio is not None:
            ax.hlines(row.tpot_ratio.median, i - 0.25, i + 0.25, colors="black")
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(shown)), [r.target for r in shown], fontsize="small")
    ax.set_ylabel(f"TPOT / {baseline}, same prompt")
    ax.set_title("TPOT ratio per pair (bar: median)")
    ax.grid(axis="y", alpha=0.3)
    return save(fig, path, dpi=110)
