"""What ``pdserve plan`` prints and writes: the table of splits, the scale commands, ``plan.json`` and the
figure. Pure formatting, except ``write_outputs`` (files) and ``plot_plan`` (a PNG via matplotlib's Agg
canvas, as ``bench.plots`` draws).

Contracts: the table has one row per searched split (disaggregated by prefill count, colocated last)
and, per asked-for rate, the attainment and the TTFT and TPOT p99 (milliseconds); the recommended row is
marked. ``plan_json`` holds everything deterministic about a plan (no wall-clock times) so two runs with
the same inputs write identical files apart from the ``timing`` section.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from bench.metrics import Slo
from bench.suites.report_util import save

from .search import Plan, SplitResult
from .spec import Split

MARK = "<- recommended"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def table_rows(plan: Plan) -> list[list[str]]:
    """The header, then one row per split (strings), for ``markdown_table``; rates and goodputs are the
    fleet's (``plan.scale`` x those simulated)."""
    rates = [a.rate * plan.scale for a in plan.results[0].at_rates] if plan.results else []
    scaled = plan.scale != 1
    header = ["split", *(["simulated as"] if scaled else []), "goodput (req/s)"]
    for r in rates:
        header += [f"SLO met @{r:g}", f"TTFT p99 @{r:g} (ms)", f"TPOT p99 @{r:g} (ms)"]
    rows = [[*header, ""]]
    for res in plan.results:
        row = [plan.fleet_split(res.split).label, *([res.split.label] if scaled else []),
               f"{res.goodput * plan.scale:.2f}"]
        for a in res.at_rates:
            row += [f"{a.attainment:.1%}", _ms(a.ttft.p99), _ms(a.tpot.p99)]
        rows.append([*row, MARK if res is plan.recommended else ""])
    return rows


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows[1:])])


def scale_commands(split: Split) -> list[str]:
    """``pdserve scale`` commands that move a running server to ``split`` (``--url`` or ``$PDSERVE_URL``
    names the server), with a comment line first."""
    if split.colocated:
        return [f"# {split.label}: a colocated pool is chosen at start (colocated: true, decode.replicas="
                f"{split.decode}, as configs/sim-64-colocated.yaml); a running disaggregated server comes",
                "# nearest by prefilling every prompt on its decode workers:",
                "pdserve scale prefill 0 --wait", f"pdserve scale decode {split.decode} --wait"]
    return [f"# apply {split.label} (run the command that shrinks a pool first when the GPUs are fixed):",
            f"pdserve scale prefill {split.prefill} --wait", f"pdserve scale decode {split.decode} --wait"]


def neighbours(plan: Plan) -> list[Split]:
    """The recommended split and two to compare it with, as the fleet's splits: the searched splits next
    to it by prefill count, or, when colocated is recommended, the two best disaggregated splits."""
    best = plan.recommended
    if best.split.colocated:
        others = sorted((r for r in plan.results if not r.split.colocated), key=lambda r: -r.goodput)[:2]
        return [plan.fleet_split(r.split) for r in [best, *others]]
    order = sorted((r.split for r in plan.results if not r.split.colocated), key=lambda s: s.prefill)
    at = order.index(best.split)
    lo = max(0, min(at - 1, len(order) - 3))
    return [plan.fleet_split(s) for s in order[lo:lo + 3]]


def render(plan: Plan, slo: Slo, header: str) -> str:
    best = plan.fleet_split(plan.recommended.split)
    lines = [header, "", markdown_table(table_rows(plan)), "",
             f"recommended: {best.label}, goodput {plan.recommended.goodput * plan.scale:.2f} req/s "
             f"(>= 90% of requests within TTFT {_ms(slo.ttft_s)} ms and TPOT {_ms(slo.tpot_s)} ms)", "",
             *scale_commands(best)]
    if plan.scale != 1:
        counts = ",".join(str(s.prefill) for s in neighbours(plan))
        lines += ["", f"# planned on a {plan.workers}-worker model: to check these splits on all {plan.fleet_workers} "
                  f"workers, rerun with --prefill-counts {counts}"]
    return "\n".join(lines)


def _result_json(plan: Plan, r: SplitResult) -> dict[str, Any]:
    fleet = plan.fleet_split(r.split)
    return {"split": fleet.label, "prefill": fleet.prefill, "decode": fleet.decode, "colocated": fleet.colocated,
            "simulated": r.split.label, "goodput_req_s": r.goodput * plan.scale,
            "at_rates": [{"rate": a.rate * plan.scale, "attainment": a.attainment, "ttft_s": asdict(a.ttft),
                          "tpot_s": asdict(a.tpot)} for a in r.at_rates],
            "probes": [{"rate": rate * plan.scale, "passed": ok} for rate, ok in r.probes],
            "runs": r.runs, "steps": r.steps}


def plan_json(plan: Plan, inputs: dict[str, Any], seconds: float) -> dict[str, Any]:
    best = plan.fleet_split(plan.recommended.split)
    return {"inputs": inputs, "workers": plan.fleet_workers or plan.workers, "simulated_workers": plan.workers,
            "recommended": best.label, "goodput_req_s": plan.recommended.goodput * plan.scale,
            "scale_commands": [c for c in scale_commands(best) if not c.startswith("#")],
            "check_splits": [s.label for s in neighbours(plan)],
            "splits": [_result_json(plan, r) for r in plan.results],
            "timing": {"seconds": round(seconds, 1), "per_split_s": {r.split.label: round(r.seconds, 2)
                                                                     for r in plan.results}}}


def plot_plan(path: Path, plan: Plan, slo: Slo) -> Path:
    """Goodput per split (bars, the recommended one darker) over TTFT and TPOT p99 at the asked-for rates."""
    labels = [plan.fleet_split(r.split).label for r in plan.results]
    xs = list(range(len(labels)))
    fig = Figure(figsize=(max(7.0, 0.45 * len(labels) + 3), 7.5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    colors = ["tab:blue" if r is plan.recommended else "lightsteelblue" for r in plan.results]
    top.bar(xs, [r.goodput * plan.scale for r in plan.results], color=colors)
    top.set_ylabel("goodput (req/s, >= 90% within SLOs)")
    top.set_title(f"P:D splits of {plan.fleet_workers or plan.workers} workers "
                  f"(recommended: {plan.fleet_split(plan.recommended.split).label})")
    for k, rate in enumerate(a.rate * plan.scale for a in plan.results[0].at_rates):
        ttfts = [math.nan if (v := r.at_rates[k].ttft.p99) is None else v * 1000 for r in plan.results]
        tpots = [math.nan if (v := r.at_rates[k].tpot.p99) is None else v * 1000 for r in plan.results]
        bottom.plot(xs, ttfts, "o-", color=f"C{2 * k}", label=f"TTFT p99 @{rate:g} req/s")
        bottom.plot(xs, tpots, "s--", color=f"C{2 * k + 1}", label=f"TPOT p99 @{rate:g} req/s")
    for value, name, color in ((slo.ttft_s, "TTFT SLO", "C0"), (slo.tpot_s, "TPOT SLO", "C1")):
        if value is not None:
            bottom.axhline(value * 1000, color=color, lw=0.8, ls=":", label=name)
    bottom.set_yscale("log")
    bottom.set_ylabel("p99 latency (ms)")
    bottom.set_xticks(xs, labels, rotation=60, ha="right", fontsize="small")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    bottom.legend(fontsize="small")
    return save(fig, path, dpi=110)


def write_outputs(out: Path, plan: Plan, slo: Slo, text: str, data: dict[str, Any], plot: bool) -> list[Path]:
    """``plan.md`` (the printed text), ``plan.json`` and, with ``plot``, ``plan.png`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "plan.md", out / "plan.json"]
    paths[0].write_text(text + "\n")
    paths[1].write_text(json.dumps(data, indent=2) + "\n")
    if plot:
        paths.append(plot_plan(out / "plan.png", plan, slo))
    return paths
