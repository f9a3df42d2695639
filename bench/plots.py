"""PNG figures, drawn on matplotlib's Agg canvas directly (no pyplot state, no display needed).

* ``ttft_cdf.png`` / ``tpot_cdf.png``: the CDF of TTFT / TPOT of the successful requests, one line per
  run (target x load point, repeats merged).
* ``latency_vs_load.png`` (sweeps only, two or more load points): p50 (solid) and p99 (dashed) TTFT and
  TPOT, throughput and SLO attainment against the swept load, one colour per target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from matplotlib import rcParams
from matplotlib.figure import Figure

from bench import metrics
from bench.metrics import RunSummary
from bench.record import RequestRecord, RunResult
from bench.report import GOODPUT_UNITS
from bench.suites.report_util import cdf, save

LatencyFn = Callable[[RequestRecord], float | None]


def plot_cdf(path: Path, results: Sequence[RunResult], fn: LatencyFn, name: str) -> Path:
    groups: dict[str, list[float]] = {}
    for r in results:
        values = groups.setdefault(f"{r.key.target} {r.key.load.label}", [])
        values.extend(v for rec in r.records if rec.ok and (v := fn(rec)) is not None)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for label, values in groups.items():
        cdf(ax, [v * 1000 for v in values], label)
    ax.set_xlabel(f"{name} (ms)")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.01)
    ax.set_title(f"{name} CDF")
    ax.grid(alpha=0.3)
    if any(groups.values()):
        ax.legend(fontsize="small")
    return save(fig, path, dpi=110)


PANELS: tuple[tuple[str, Callable[[RunSummary], tuple[float | None, float | None]]], ...] = (
    ("TTFT (ms)", lambda s: (s.ttft.p50, s.ttft.p99)),
    ("TPOT (ms)", lambda s: (s.tpot.p50, s.tpot.p99)),
)


def plot_vs_load(path: Path, summaries: Sequence[RunSummary]) -> Path:
    targets = list(dict.fromkeys(s.target for s in summaries))
    kind = summaries[0].load_kind
    fig = Figure(figsize=(11, 7.5))
    axes = fig.subplots(2, 2)
    colors = rcParams["axes.prop_cycle"].by_key()["color"]
    for t_i, target in enumerate(targets):
        rows = sorted((s for s in summaries if s.target == target), key=lambda s: s.load_value)
        xs = [s.load_value for s in rows]
        color = colors[t_i % len(colors)]
        for ax, (title, get) in zip(axes[0], PANELS, strict=True):
            p50 = [None if (v := get(s)[0]) is None else v * 1000 for s in rows]
            p99 = [None if (v := get(s)[1]) is None else v * 1000 for s in rows]
            ax.plot(xs, p50, "o-", color=color, label=f"{target} p50")
            ax.plot(xs, p99, "s--", color=color, label=f"{target} p99")
            ax.set_ylabel(title)
        axes[1][0].plot(xs, [s.output_tok_per_s for s in rows], "o-", color=color, label=target)
        axes[1][0].set_ylabel("output tokens/s")
        att = [None if s.slo_attainment is None else 100 * s.slo_attainment for s in rows]
        axes[1][1].plot(xs, att, "o-", color=color, label=target)
        axes[1][1].set_ylabel("requests meeting SLOs (%)")
    axes[1][1].axhline(90, color="grey", lw=0.8, ls=":")
    for ax in axes.flat:
        ax.set_xlabel(f"load ({kind}, {GOODPUT_UNITS.get(kind, '')})")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize="small")
    fig.suptitle("latency and throughput against load")
    return save(fig, path, dpi=110)


def write_plots(out_dir: str | Path, results: Sequence[RunResult], summaries: Sequence[RunSummary]) -> list[Path]:
    """Write the CDFs, and the against-load figure when there are two or more load points."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [
        plot_cdf(out / "ttft_cdf.png", results, metrics.ttft, "TTFT"),
        plot_cdf(out / "tpot_cdf.png", results, metrics.tpot, "TPOT"),
    ]
    if len({s.load_value for s in summaries}) >= 2:
        paths.append(plot_vs_load(out / "latency_vs_load.png", summaries))
    return paths
