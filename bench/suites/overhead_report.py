"""Tables and a figure for the router-overhead suite (``bench.suites.overhead``).

    python -m bench.suites.overhead_report --out bench/results/overhead

For each concurrency, target and repeat: the median and p99 TTFT and end-to-end latency and the request
rate; then each router's added latency, its median minus the direct call's median of the same repeat.
Cells show the median over the repeats [lowest to highest]. Writes ``OUT/results.md``, ``OUT/results.json``
and ``OUT/overhead.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.suites.report_util import (
    cell,
    markdown_table,
    new_figure,
    percentile,
    read_records_csv,
    report_main,
    save,
    spread,
    spread_errorbar,
)


def per_repeat(records: list[dict[str, Any]]) -> dict[tuple[float, str, int], dict[str, float]]:
    """(concurrency, target, repeat) -> ttft/e2e medians and p99 (ms) and req/s of that repeat's requests."""
    groups: dict[tuple[float, str, int], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["load_value"], r["target"], r["repeat"]), []).append(r)
    result = {}
    for key, recs in groups.items():
        ok = [r for r in recs if r["ok"]]
        ttft = [r["ttft_s"] for r in ok if r["ttft_s"] is not None]
        e2e = [r["e2e_s"] for r in ok if r["e2e_s"] is not None]
        span = max(r["sent_s"] + r["e2e_s"] for r in ok) - min(r["sent_s"] for r in ok) if ok else 0.0
        result[key] = {"ttft_p50": 1000 * (percentile(ttft, 50) or 0.0),
                       "ttft_p99": 1000 * (percentile(ttft, 99) or 0.0),
                       "e2e_p50": 1000 * (percentile(e2e, 50) or 0.0), "e2e_p99": 1000 * (percentile(e2e, 99) or 0.0),
                       "req_per_s": len(ok) / span if span else 0.0, "errors": float(len(recs) - len(ok))}
    return result


def build(out: Path) -> tuple[dict[str, Any], str]:
    index = json.loads((out / "runs.json").read_text())
    stats = per_repeat(read_records_csv(out / "run" / "records.csv"))
    loads = sorted({k[0] for k in stats})
    targets = list(dict.fromkeys(k[1] for k in stats))
    repeats = sorted({k[2] for k in stats})
    header = ["concurrency", "target", "TTFT p50 ms", "TTFT p99 ms", "E2E p50 ms", "added TTFT p50 ms",
              "added E2E p50 ms", "req/s", "errors"]
    rows, result = [], {}
    for load in loads:
        for target in targets:
            mine = [stats[(load, target, r)] for r in repeats if (load, target, r) in stats]
            base = [stats[(load, "direct", r)] for r in repeats if (load, target, r) in stats]
            cols = {k: spread([m[k] for m in mine]) for k in ("ttft_p50", "ttft_p99", "e2e_p50", "req_per_s", "errors")}
            cols["added_ttft_p50"] = spread([m["ttft_p50"] - b["ttft_p50"] for m, b in zip(mine, base, strict=True)])
            cols["added_e2e_p50"] = spread([m["e2e_p50"] - b["e2e_p50"] for m, b in zip(mine, base, strict=True)])
            result[f"{int(load)}/{target}"] = cols
            rows.append([int(load), target,
                         *(cell(cols[k], "{:.2f}".format) for k in ("ttft_p50", "ttft_p99", "e2e_p50",
                                                                     "added_ttft_p50", "added_e2e_p50")),
                         cell(cols["req_per_s"], "{:.0f}".format), cell(cols["errors"], "{:.0f}".format)])
    text = "\n".join([
        f"# Router overhead on a zero-compute simulated worker (`{index['git']['commit']}`)", "",
        f"Policies: {', '.join(f'{k} {v}' for k, v in index['policies'].items())}. {len(repeats)} repeats; "
        "cells: median over the repeats [lowest to highest]; added = the target's median minus the direct "
        f"call's median in the same repeat. Host busy {100 * index['host_busy_mean']:.0f}% on average.", "",
        markdown_table(header, rows, align="rlrrrrrrr"), ""])
    return {"loads": loads, "targets": targets, "cells": result}, text


def plot(result: dict[str, Any], path: Path) -> Path:
    fig, axes = new_figure(10.0, 4.0, rows=1, cols=2)
    for ax, key, label in ((axes[0][0], "ttft_p50", "TTFT p50 (ms)"), (axes[0][1], "e2e_p50", "E2E p50 (ms)")):
        for target in result["targets"]:
            cells = [result["cells"][f"{int(load)}/{target}"][key] for load in result["loads"]]
            spread_errorbar(ax, [int(x) for x in result["loads"]], cells, target)
        ax.set_xscale("log")
        ax.set_xlabel("concurrency")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    return save(fig, path)


def main() -> None:
    report_main(__doc__ or "", "bench/results/overhead", build, plot, "overhead.png")


if __name__ == "__main__":
    main()
