"""Tables and figures for suite (a) from ``OUT/runs.json`` (written by ``bench.suites.fleet``).

    python -m bench.suites.fleet_report --out bench/results/fleet

Writes ``OUT/results.md`` (markdown tables), ``OUT/results.json`` (the numbers) and ``OUT/*.png``. Latencies
are converted to H100 time: wall-clock seconds x speedup (the engines ran ``1 / speedup`` times slower
than the H100 profile); rates the other way.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import pct
from bench.suites.fleet import POLICIES
from bench.suites.report_util import cdf, load_run, markdown_table, ms, new_figure, save

PREFILL_WORKERS = 32


def worker_counts(summary: dict[str, Any]) -> list[int]:
    """Requests per prefill worker, all 32 (0 for unused), descending; 'none' (local prefill) excluded."""
    counts = {name: n for name, n in summary["prefill_workers"] if name != "none"}
    values = sorted(counts.values(), reverse=True)
    return values + [0] * max(0, PREFILL_WORKERS - len(values))


def sent_rate(records: list[dict[str, Any]]) -> float:
    """Requests actually sent per wall-clock second (chat turns wait for the session's previous turn, so
    this can be below the Poisson rate asked for)."""
    sent = sorted(r["sent_s"] for r in records)
    return (len(sent) - 1) / (sent[-1] - sent[0]) if len(sent) > 1 and sent[-1] > sent[0] else 0.0


def session_moves(records: list[dict[str, Any]]) -> int | None:
    """Follow-up chat turns sent to a different prefill worker than their session's previous turn."""
    turns: dict[tuple[str, int], str] = {(r["session_id"], r["turn"]): r["prefill_worker"]
                                         for r in records if r["session_id"] is not None}
    if not turns:
        return None
    return sum(1 for (sid, t), w in turns.items() if t > 0 and (sid, t - 1) in turns and turns[(sid, t - 1)] != w)


def hit_ceiling(workload: str, runs: dict[str, dict[str, Any]]) -> float | None:
    """The hit rate one cache shared by the whole fleet would reach on these requests (an upper bound for
    any policy): chat turn 0 reuses the shared system prompt, turn k the whole prompt of turn k-1 in full
    blocks (the answers in the history are synthetic, so the generated tokens never match); docqa reuses
    the document from its second request on. The reusable prefix lengths are the largest cached counts
    any policy observed."""
    all_recs = [r for run in runs.values() for r in run["records"] if r["ok"]]
    if not all_recs:
        return None
    recs = next(iter(runs.values()))["records"]
    if workload == "chat":
        system = max((r["cached_tokens"] or 0) for r in all_recs if r["turn"] == 0)
        prompt = {(r["session_id"], r["turn"]): r["prompt_tokens"] for r in recs}
        reusable = sum(system if r["turn"] == 0 else prompt[(r["session_id"], r["turn"] - 1)] // 16 * 16
                       for r in recs)
    elif workload == "docqa":
        def doc(r: dict[str, Any]) -> str:
            return str(r["request_id"]).rsplit("-", 1)[1]
        shared: dict[str, int] = {}
        for r in all_recs:
            shared[doc(r)] = max(shared.get(doc(r), 0), r["cached_tokens"] or 0)
        seen: set[str] = set()
        reusable = 0
        for r in sorted(recs, key=lambda r: r["sent_s"]):
            reusable += shared[doc(r)] if doc(r) in seen else 0
            seen.add(doc(r))
    else:
        return None
    return reusable / sum(r["prompt_tokens"] for r in recs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/results/fleet")
    ns = p.parse_args()
    out = Path(ns.out)
    index = json.loads((out / "runs.json").read_text())
    groups: dict[tuple[str, float], dict[str, dict[str, Any]]] = {}
    for entry in index["runs"]:
        run = load_run(out / entry["kept"])
        run["entry"] = entry
        run["speedup"] = float(entry["speedup"])
        groups.setdefault((entry["workload"], float(entry["rate_h100"])), {})[entry["policy"]] = run

    md: list[str] = []
    numbers: list[dict[str, Any]] = []
    for (workload, rate), runs in sorted(groups.items()):
        ceiling = hit_ceiling(workload, runs)
        rows = []
        for policy in [p for p in POLICIES if p in runs]:
            run = runs[policy]
            speedup = run["speedup"]
            s, cpu = run["summary"], run["cpu"]
            counts = worker_counts(s)
            used = sum(1 for c in counts if c)
            local = dict(s["prefill_workers"]).get("none", 0)
            mean = sum(counts) / PREFILL_WORKERS
            rows.append([
                f"`{policy}`", f"{s['n_ok']}/{s['n']}", f"{sent_rate(run['records']) / speedup:.0f}",
                ms(s["ttft"]["p50"], speedup), ms(s["ttft"]["p99"], speedup),
                ms(s["tpot"]["p50"], speedup, 1), ms(s["tpot"]["p99"], speedup, 1),
                pct(s["hit_rate"]), f"{used}", f"{counts[0]} / {counts[-1]}",
                f"{counts[0] / mean:.1f}" if mean else "-", f"{local}",
                "-" if (moved := session_moves(run["records"])) is None else f"{moved}",
                f"{cpu.get('host_busy_mean', 0):.2f}",
            ])
            numbers.append({
                "workload": workload, "rate_h100": rate, "rate_wall": rate * speedup, "speedup": speedup,
                "policy": policy,
                "n": s["n"], "n_ok": s["n_ok"], "hit_rate": s["hit_rate"], "hit_ceiling": ceiling,
                "sent_req_per_s_h100": sent_rate(run["records"]) / speedup,
                "ttft_h100_s": {k: s["ttft"][k] * speedup for k in ("p50", "p90", "p99", "mean")},
                "tpot_h100_s": {k: s["tpot"][k] * speedup for k in ("p50", "p90", "p99", "mean")},
                "ttft_wall_s": s["ttft"], "tpot_wall_s": s["tpot"],
                "followup_turns_moved": session_moves(run["records"]), "prefill_requests_per_worker": counts,
                "workers_used": used, "local_prefills": local,
                "route_reasons": s["route_reasons"], "host_busy_mean": cpu.get("host_busy_mean"),
                "host_busy_p90": cpu.get("host_busy_p90"), "server_cores_mean": cpu.get("server_cores_mean"),
                "run_dir": run["entry"]["kept"], "attempts": len(run["entry"]["attempts"]),
            })
        speedups = sorted({run["speedup"] for run in runs.values()})
        wall = ", ".join(f"{rate * x:g} req/s wall at speedup {x:g}" for x in speedups)
        md.append(f"### {workload}, Poisson {rate:g} req/s in H100 time ({wall})\n")
        md.append(f"Hit-rate ceiling (one cache shared by the fleet, same requests): {pct(ceiling)}\n")
        md.append(markdown_table(
            ["policy", "ok/n", "sent req/s", "TTFT p50 (ms)", "TTFT p99 (ms)", "TPOT p50 (ms)", "TPOT p99 (ms)",
             "hit rate", "workers used", "req/worker max / min", "max ÷ mean", "local prefills", "turns moved",
             "host CPU busy"],
            rows))
        md.append("")
    (out / "results.md").write_text("\n".join(md) + "\n")
    (out / "results.json").write_text(json.dumps({"runs": numbers}, indent=2) + "\n")

    keys = sorted(groups)
    workloads = sorted({w for w, _ in keys})
    rates = sorted({r for _, r in keys})

    def cdf_of(metric: str) -> Callable[[Any, str, dict[str, Any]], None]:
        return lambda ax, policy, run: cdf(ax, [rec[metric] * 1000 * run["speedup"] for rec in run["records"]
                                                if rec["ok"] and rec[metric] is not None], policy)

    def per_worker(ax: Any, policy: str, run: dict[str, Any]) -> None:
        counts = worker_counts(run["summary"])
        ax.plot(range(1, len(counts) + 1), counts, "o-", ms=3, label=policy)

    # One panel per (workload, rate), one line per policy: (file, title suffix, x label, y label, line).
    for name, title, xlabel, ylabel, draw in (
            ("ttft_cdf.png", " (H100 time)", "TTFT (ms, H100 time)", "fraction of requests", cdf_of("ttft_s")),
            ("tpot_cdf.png", " (H100 time)", "TPOT (ms, H100 time)", "fraction of requests", cdf_of("tpot_s")),
            ("requests_per_worker.png", ": requests per prefill worker", "prefill worker, busiest first", "requests",
             per_worker)):
        fig, axes = new_figure(5.5 * len(rates), 3.8 * len(workloads), len(workloads), len(rates))
        for i, w in enumerate(workloads):
            for j, r in enumerate(rates):
                ax = axes[i][j]
                for policy in POLICIES:
                    maybe = groups.get((w, r), {}).get(policy)
                    if maybe:
                        draw(ax, policy, maybe)
                ax.set_title(f"{w}, {r:g} req/s{title}")
                ax.set_xlabel(xlabel)
                ax.set_ylabel(ylabel)
                ax.grid(alpha=0.3)
                ax.legend(fontsize="small")
        save(fig, out / name)

    fig, axes = new_figure(15, 3.8 * len(workloads), len(workloads), 3)
    width = 0.8 / max(1, len(rates))
    for i, w in enumerate(workloads):
        for k, (title, get) in enumerate((
            ("TTFT p50 (ms, H100)", lambda run: run["summary"]["ttft"]["p50"] * 1000 * run["speedup"]),
            ("TTFT p99 (ms, H100)", lambda run: run["summary"]["ttft"]["p99"] * 1000 * run["speedup"]),
            ("hit rate (cached / prompt tokens)", lambda run: run["summary"]["hit_rate"] or 0.0),
        )):
            ax = axes[i][k]
            for j, r in enumerate(rates):
                xs = [x + j * width for x in range(len(POLICIES))]
                ys = [get(groups[(w, r)][p]) if p in groups.get((w, r), {}) else 0 for p in POLICIES]
                ax.bar(xs, ys, width, label=f"{r:g} req/s")
            ax.set_xticks([x + width * (len(rates) - 1) / 2 for x in range(len(POLICIES))], list(POLICIES),
                          fontsize="small", rotation=15)
            ax.set_title(f"{w}: {title}")
            ax.grid(alpha=0.3, axis="y")
            ax.legend(fontsize="small")
    save(fig, out / "summary.png")
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
