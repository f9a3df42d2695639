"""Tables and figures for the disaggregated-vs-colocated suite from ``OUT/runs.json`` (``bench.suites.disagg``).

    python -m bench.suites.disagg_report --out bench/results/disagg

Every latency is in H100 time (wall-clock x speedup). Per fleet and run (quiet, bursty at each load
scale), over the seeds (repeats), the median [lowest, highest] of: the stream requests' TTFT and TPOT p50
and p99, the burst requests' TTFT p99, the ITL p99 of all requests, and the SLO attainment (share of all
requests meeting both the TTFT and the TPOT SLO). Goodput per seed: the highest offered load (requests per
H100 second) of a bursty run whose attainment is at least 90% (DistServe's definition, Zhong et al.,
OSDI 2024); 0 when none is. Writes ``OUT/results.md``, ``OUT/results.json`` and ``OUT/disagg.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.suites.report_util import (
    cell,
    load_run,
    markdown_table,
    new_figure,
    percentile,
    report_main,
    save,
    spread,
    spread_errorbar,
)

ATTAINMENT = 0.9


def run_figures(out: Path, run: dict[str, Any], speedup: float, slo_ms: dict[str, float]) -> dict[str, Any]:
    """One run's figures (H100 ms) from its records and summary."""
    loaded = load_run(out / run["dir"])
    records, summary = loaded["records"], loaded["summary"]
    h100 = 1000.0 * speedup

    def pct(recs: list[dict[str, Any]], key: str, q: float) -> float | None:
        values = [r[key] for r in recs if r["ok"] and r[key] is not None]
        x = percentile(values, q)
        return None if x is None else x * h100

    stream = [r for r in records if r["request_id"].startswith("stream-")]
    bursts = [r for r in records if r["request_id"].startswith("burst-")]
    met = sum(1 for r in records if r["ok"] and r["ttft_s"] is not None and r["ttft_s"] * h100 <= slo_ms["ttft"]
              and (r["tpot_s"] is None or r["tpot_s"] * h100 <= slo_ms["tpot"]))
    first = min(r["sent_s"] for r in records)
    last = max(r["sent_s"] for r in records)
    offered = (len(records) - 1) / ((last - first) * speedup) if last > first else 0.0
    return {"stream_ttft_p50": pct(stream, "ttft_s", 50), "stream_ttft_p99": pct(stream, "ttft_s", 99),
            "stream_tpot_p50": pct(stream, "tpot_s", 50), "stream_tpot_p99": pct(stream, "tpot_s", 99),
            "burst_ttft_p99": pct(bursts, "ttft_s", 99),
            "itl_p99": None if summary["itl"]["p99"] is None else summary["itl"]["p99"] * h100,
            "attainment": met / len(records) if records else None, "offered_req_per_s": offered,
            "errors": sum(1 for r in records if not r["ok"]), "host_busy": run["host_busy_mean"]}


def build(out: Path) -> tuple[dict[str, Any], str]:
    index = json.loads((out / "runs.json").read_text())
    speedup, slo = index["speedup"], index["slo_h100_ms"]
    figs: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for run in index["runs"]:
        f = run_figures(out, run, speedup, slo) | {"seed": run["seed"]}
        figs.setdefault((run["fleet"], run["variant"], run["scale"]), []).append(f)
    keys = ("stream_ttft_p50", "stream_ttft_p99", "stream_tpot_p50", "stream_tpot_p99", "burst_ttft_p99", "itl_p99",
            "attainment", "offered_req_per_s", "host_busy")
    header = ["fleet", "run", "offered req/s", "stream TTFT p50", "stream TTFT p99", "stream TPOT p50",
              "stream TPOT p99", "burst TTFT p99", "ITL p99", "SLO met", "host busy"]
    rows, cells = [], {}
    for (fleet, variant, scale), fs in sorted(figs.items(), key=lambda kv: (kv[0][0], kv[0][1] != "quiet", kv[0][2])):
        c = {k: spread([f[k] for f in fs]) for k in keys}
        cells[f"{fleet}/{variant}-x{scale:g}"] = c | {"seeds": [f["seed"] for f in fs], "runs": fs}
        rows.append([fleet, f"{variant} x{scale:g}", cell(c["offered_req_per_s"], "{:.0f}".format),
                     *(cell(c[k], "{:.1f}".format) for k in keys[:6]), cell(c["attainment"], "{:.0%}".format),
                     cell(c["host_busy"], "{:.0%}".format)])
    goodput: dict[str, Any] = {}
    for fleet in dict.fromkeys(k[0] for k in figs):
        per_seed: dict[int, float] = {}
        for (fl, variant, _), fs in figs.items():
            if fl != fleet or variant != "bursty":
                continue
            for f in fs:
                ok = f["attainment"] is not None and f["attainment"] >= ATTAINMENT
                per_seed[f["seed"]] = max(per_seed.get(f["seed"], 0.0), f["offered_req_per_s"] if ok else 0.0)
        goodput[fleet] = {"per_seed": per_seed, "spread": spread(list(per_seed.values()))}
    text = "\n".join([
        f"# Disaggregated vs colocated on 16 simulated H100s (`{index['machine']['git']['commit']}`)", "",
        f"Latencies in H100 milliseconds; SLOs TTFT {slo['ttft']:g} ms, TPOT {slo['tpot']:g} ms. Cells: median "
        "over the seeds [lowest, highest].", "",
        markdown_table(header, rows, align="ll" + "r" * (len(header) - 2)), "",
        f"Goodput (highest offered bursty load with >= {ATTAINMENT:.0%} of requests meeting both SLOs, req/s of "
        "H100 time; 0 when no tested load did):", "",
        markdown_table(["fleet", "goodput", "per seed"],
                       [[f, cell(g["spread"], "{:.0f}".format),
                         ", ".join(f"{s}: {v:.0f}" for s, v in sorted(g["per_seed"].items()))]
                        for f, g in goodput.items()]), ""])
    return {"cells": cells, "goodput": goodput, "speedup": speedup, "slo_h100_ms": slo}, text


def plot(result: dict[str, Any], path: Path) -> Path:
    fig, axes = new_figure(11.0, 4.0, rows=1, cols=2)
    for ax, key, label in ((axes[0][0], "stream_tpot_p99", "stream TPOT p99 (H100 ms)"),
                           (axes[0][1], "attainment", "SLO attainment")):
        for fleet in dict.fromkeys(k.split("/")[0] for k in result["cells"]):
            pts = sorted((c["offered_req_per_s"][0], c[key]) for name, c in result["cells"].items()
                         if name.startswith(f"{fleet}/bursty") and c[key] is not None)
            spread_errorbar(ax, [x for x, _ in pts], [c for _, c in pts], f"{fleet}, bursty")
            quiet = result["cells"].get(f"{fleet}/quiet-x1")
            if quiet and quiet[key]:
                ax.plot([quiet["offered_req_per_s"][0]], [quiet[key][0]], marker="s", linestyle="none",
                        label=f"{fleet}, quiet")
        ax.set_xlabel("offered load (req/s, H100 time)")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    return save(fig, path)


def main() -> None:
    report_main(__doc__ or "", "bench/results/disagg", build, plot, "disagg.png")


if __name__ == "__main__":
    main()
