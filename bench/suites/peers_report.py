"""Tables and figures for the peer-router suite from ``OUT/runs.json`` (written by ``bench.suites.peers``).

    python -m bench.suites.peers_report --out bench/results/peers

Writes ``OUT/results.md``, ``OUT/results.json`` and ``OUT/peers.png``. For each trace and arm, over the
seeds (repeats): the median and the range (lowest to highest seed) of TTFT p50 and p99 and TPOT p99 (H100
time: wall-clock x speedup), the prefix-cache hit rate and its share of the ceiling's (the same seed's
requests on one unbounded shared cache), max/min requests per worker and the busiest worker's share, SLO
attainment and goodput: the offered load (requests per H100-second) times the attainment, i.e. the rate
of requests served within both SLOs (every arm is offered the same requests at the same times, so a run's
own duration, stretched by its slowest request, does not enter). Two arms whose ranges overlap are a tie
on that column.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.suites.report_util import cell, load_run, markdown_table, new_figure, report_main, save, spread

Row = dict[str, Any]


def worker_counts(run: Row, summary: Row) -> list[float]:
    """Requests per worker: the workers' own counters (peer arms) or pdserve's routing headers, with the
    workers that got none as zeros (16 workers)."""
    counts = list(run.get("worker_requests", {}).values())
    if not counts:
        counts = [n for _, n in summary["decode_workers"]]
        counts += [0] * (16 - len(counts))
    return counts


def balance(run: Row, summary: Row) -> float | None:
    """Max/min requests per worker; a worker that got none makes it infinite."""
    counts = worker_counts(run, summary)
    if len(counts) < 2:
        return None
    return max(counts) / min(counts) if min(counts) else float("inf")


def busiest_share(run: Row, summary: Row) -> float | None:
    """The share of all requests that the busiest worker served (1/16 when perfectly spread)."""
    counts = worker_counts(run, summary)
    return max(counts) / sum(counts) if counts and sum(counts) else None


def run_metrics(out: Path, run: Row, speedup: float, offered: float) -> Row:
    """The figures of one run (latencies in H100 ms; ``offered``: its load in requests per H100-second)."""
    loaded = load_run(out / run["dir"])
    s = loaded["summary"]
    h100 = 1000.0 * speedup
    return {"ttft_p50": s["ttft"]["p50"] * h100, "ttft_p99": s["ttft"]["p99"] * h100,
            "tpot_p99": s["tpot"]["p99"] * h100, "hit": s["hit_rate"], "balance": balance(run, s),
            "busiest": busiest_share(run, s),
            "slo": s["slo_attainment"], "goodput": offered * (s["slo_attainment"] or 0.0),
            "ok": f"{s['n_ok']}/{s['n']}", "host_busy": run["host_busy_mean"]}


def pct(x: float) -> str:
    return "inf" if x == float("inf") else f"{100 * x:.1f}%"


def build(out: Path) -> tuple[Row, str]:
    index = json.loads((out / "runs.json").read_text())
    speedup = index["speedup"]
    per: dict[tuple[str, str], list[Row]] = {}
    ceiling: dict[tuple[str, int], float | None] = {}
    for run in index["runs"]:
        m = run_metrics(out, run, speedup if run["arm"] != "ceiling" else 1.0, index["rate"] / speedup)
        m["seed"] = run["seed"]
        if run["arm"] == "ceiling":
            ceiling[(run["trace"], run["seed"])] = m["hit"]
        else:
            per.setdefault((run["trace"], run["arm"]), []).append(m)
    for (trace, _), arm_runs in per.items():
        for m in arm_runs:
            best = ceiling.get((trace, m["seed"]))
            m["of_ceiling"] = m["hit"] / best if m["hit"] is not None and best else None
    traces = list(dict.fromkeys(t for t, _ in per))
    header = ["arm", "TTFT p50 ms", "TTFT p99 ms", "TPOT p99 ms", "hit rate", "of ceiling", "max/min req",
              "busiest worker", "SLO met", "goodput req/s", "host busy"]
    text = [f"# Peer routers on 16 simulated H100 workers (`{index['machine']['git']['commit']}`)", "",
            f"Offered load {index['rate'] / speedup:g} req/s of H100 time (Poisson {index['rate']:g} req/s at "
            f"speedup {speedup:g}); {index['num_blocks']} KV blocks of 16 tokens per worker; SLOs (H100 time) "
            f"TTFT {index['slo_h100_ms']['ttft']:g} ms, TPOT {index['slo_h100_ms']['tpot']:g} ms. "
            "Cells: median over the seeds [lowest to highest]. Latencies in H100 milliseconds.", ""]
    result: Row = {"speedup": speedup, "traces": {}}
    for trace in traces:
        top = spread([v for (t, _), v in ceiling.items() if t == trace])
        text += [f"## {trace}", "", f"Ceiling hit rate (one unbounded shared cache): {cell(top, pct)}", ""]
        rows: list[list[str]] = []
        result["traces"][trace] = {"ceiling": top, "arms": {}}
        for (t, arm), ms in per.items():
            if t != trace:
                continue
            cols = {k: spread([m[k] for m in ms]) for k in ("ttft_p50", "ttft_p99", "tpot_p99", "hit",
                                                           "of_ceiling", "balance", "busiest", "slo", "goodput",
                                                           "host_busy")}
            result["traces"][trace]["arms"][arm] = {"seeds": [m["seed"] for m in ms], **cols, "runs": ms}
            rows.append([arm, cell(cols["ttft_p50"], "{:.0f}".format), cell(cols["ttft_p99"], "{:.0f}".format),
                         cell(cols["tpot_p99"], "{:.1f}".format), cell(cols["hit"], pct),
                         cell(cols["of_ceiling"], pct), cell(cols["balance"], "{:.2f}".format),
                         cell(cols["busiest"], pct),
                         cell(cols["slo"], pct), cell(cols["goodput"], "{:.1f}".format),
                         cell(cols["host_busy"], pct)])
        text += [markdown_table(header, rows), ""]
    return result, "\n".join(text)


def plot(result: Row, path: Path) -> Path:
    traces = list(result["traces"])
    fig, axes = new_figure(5.0 * len(traces), 7.0, rows=2, cols=len(traces))
    for col, trace in enumerate(traces):
        arms = result["traces"][trace]["arms"]
        names = list(arms)
        for row, (key, label) in enumerate((("ttft_p99", "TTFT p99 (H100 ms)"), ("hit", "hit rate"))):
            ax = axes[row][col]
            meds = [arms[a][key][0] if arms[a][key] else 0.0 for a in names]
            lows = [m - arms[a][key][1] if arms[a][key] else 0.0 for m, a in zip(meds, names, strict=True)]
            highs = [arms[a][key][2] - m if arms[a][key] else 0.0 for m, a in zip(meds, names, strict=True)]
            ax.barh(names, meds, xerr=[lows, highs], color="tab:blue" if row == 0 else "tab:green")
            if key == "hit" and result["traces"][trace]["ceiling"]:
                ax.axvline(result["traces"][trace]["ceiling"][0], color="black", linestyle="--", label="ceiling")
                ax.legend(loc="lower right", fontsize=7)
            ax.set_title(f"{trace}: {label}", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.invert_yaxis()
    return save(fig, path)


def main() -> None:
    report_main(__doc__ or "", "bench/results/peers", build, plot, "peers.png")


if __name__ == "__main__":
    main()
