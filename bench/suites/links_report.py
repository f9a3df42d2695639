"""Tables and figures for suite (c) from ``OUT/runs.json`` (written by ``bench.suites.links``).

    python -m bench.suites.links_report --out bench/results/links

Writes ``OUT/results.md``, ``OUT/results.json`` and ``OUT/latency.png`` (TTFT p50 / p99 and TPOT p99 per
arm: each repeat's value, the mean, and the spread from the lowest to the highest repeat) and
``OUT/ttft_cdf.png`` (all repeats' requests). Latencies are in H100 time: wall-clock seconds x speedup;
link bandwidths the other way. Also per run: the share of requests decoded in another rack than their
prefill worker's, the host's CPU load, and the link table the orchestrator had learnt at the end.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path
from typing import Any

from bench.suites.report_util import cdf, load_run, markdown_table, ms, new_figure, percentile, save
from orchestrator.config import load_config
from protocol.sim_topology import SimTopology

FIGURES = (("ttft", "p50"), ("ttft", "p99"), ("tpot", "p99"))
_GAUGE = re.compile(r"pdserve_link_bandwidth_bytes_per_second\{([^}]*)\} (\S+)")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def topology_of(config_path: Path) -> SimTopology:
    engine = load_config(config_path).engine
    topology = getattr(engine, "topology", None)
    if topology is None:
        raise ValueError(f"{config_path} has no engine.topology")
    return topology


def rack(topology: SimTopology, worker: str) -> int | None:
    role, _, index = worker.rpartition("-")
    if role not in ("prefill", "decode") or not index.isdigit():
        return None
    return topology.rack_of(topology.host_of(role, int(index)))


def cross_rack_share(records: list[dict[str, Any]], topology: SimTopology) -> float | None:
    """Of the requests prefilled remotely, the share decoded in another rack."""
    pairs = [(rack(topology, r["prefill_worker"] or ""), rack(topology, r["decode_worker"] or ""))
             for r in records if r["ok"]]
    pairs = [(p, d) for p, d in pairs if p is not None and d is not None]
    return sum(p != d for p, d in pairs) / len(pairs) if pairs else None


def learnt_links(path: Path, speedup: float) -> dict[str, float | None]:
    """Mean learnt bandwidth (GB/s, H100 time) of same-rack and cross-rack pairs, from ``links.prom``."""
    same: list[float] = []
    cross: list[float] = []
    if path.exists():
        for line in path.read_text().splitlines():
            m = _GAUGE.match(line)
            if m:
                labels = dict(_LABEL.findall(m.group(1)))
                src, dst, value = labels["src"], labels["dst"], float(m.group(2)) / speedup / 1e9
                (cross if SimTopology.rack_of(src) != SimTopology.rack_of(dst) else same).append(value)
    return {"same_rack_gbytes_per_s": statistics.fmean(same) if same else None,
            "cross_rack_gbytes_per_s": statistics.fmean(cross) if cross else None}


def summarize(out: Path) -> dict[str, Any]:
    index = json.loads((out / "runs.json").read_text())
    speedup = float(index["speedup"])
    topology = topology_of(Path(index["config"]))
    arms: dict[str, Any] = {}
    for entry in sorted(index["runs"], key=lambda e: (e["arm"], e["repeat"])):
        run = load_run(out / entry["dir"])
        ok = [r for r in run["records"] if r["ok"]]
        summary = run["summary"]
        arm = arms.setdefault(entry["arm"], {"repeats": [], "ttft_all": [], "tpot_all": []})
        arm["ttft_all"] += [r["ttft_s"] * speedup for r in ok if r["ttft_s"] is not None]
        arm["tpot_all"] += [r["tpot_s"] * speedup for r in ok if r["tpot_s"] is not None]
        figures = {f"{m}_{q}": (summary[m][q] * speedup if summary[m].get(q) is not None else None)
                   for m, q in FIGURES}
        arm["repeats"].append({"repeat": entry["repeat"], "seed": entry["seed"], "rc": entry["rc"],
                               "n": summary["n"], "n_ok": summary["n_ok"], **figures,
                               "cross_rack_share": cross_rack_share(run["records"], topology),
                               "host_busy_mean": entry["host_busy_mean"], "host_busy_p90": entry["host_busy_p90"],
                               **learnt_links(out / entry["dir"] / "links.prom", speedup)})
    for arm in arms.values():
        for m, q in FIGURES:
            values = [r[f"{m}_{q}"] for r in arm["repeats"] if r[f"{m}_{q}"] is not None]
            arm[f"{m}_{q}"] = ({"mean": statistics.fmean(values), "min": min(values), "max": max(values)}
                               if values else None)
        arm["pooled"] = {"ttft_p50": percentile(arm["ttft_all"], 50), "ttft_p99": percentile(arm["ttft_all"], 99),
                         "tpot_p99": percentile(arm["tpot_all"], 99)}
    return {"speedup": speedup, "config": index["config"], "rate_h100": index["rate_h100"], "arms": arms}


def spread(figure: dict[str, float] | None) -> str:
    if figure is None:
        return "-"
    return f"{ms(figure['mean'])} ({ms(figure['min'])} to {ms(figure['max'])})"


def write_markdown(out: Path, result: dict[str, Any]) -> None:
    arms = result["arms"]
    head = ["arm", "TTFT p50 ms", "TTFT p99 ms", "TPOT p99 ms"]
    rows = [[name, *(spread(arm[f"{m}_{q}"]) for m, q in FIGURES)] for name, arm in arms.items()]
    per_run = [[name, r["repeat"], r["seed"], f"{r['n_ok']}/{r['n']}", *(ms(r[f"{m}_{q}"]) for m, q in FIGURES),
                "-" if r["cross_rack_share"] is None else f"{r['cross_rack_share']:.0%}",
                "-" if r["same_rack_gbytes_per_s"] is None else f"{r['same_rack_gbytes_per_s']:.1f}",
                "-" if r["cross_rack_gbytes_per_s"] is None else f"{r['cross_rack_gbytes_per_s']:.1f}",
                f"{r['host_busy_mean']:.2f} / {r['host_busy_p90']:.2f}"]
               for name, arm in arms.items() for r in arm["repeats"]]
    text = [f"# Decode placement: load + measured links vs load only ({result['config']})", "",
            f"H100 time (wall clock x speedup {result['speedup']:g}); offered load {result['rate_h100']:g} "
            "requests/s. Mean of the repeats (lowest to highest):", "", markdown_table(head, rows), "",
            "Per run (cross-rack: requests decoded in another rack than their prefill worker's; learnt links: "
            "mean of the table's same-rack and cross-rack pairs at the end, GB/s in H100 time; host busy: "
            "mean / p90 of all cores):", "",
            markdown_table(["arm", "repeat", "seed", "ok", "TTFT p50", "TTFT p99", "TPOT p99", "cross-rack",
                            "same-rack GB/s", "cross-rack GB/s", "host busy"], per_run), ""]
    (out / "results.md").write_text("\n".join(text))


def plot(out: Path, result: dict[str, Any]) -> None:
    arms = result["arms"]
    fig, axes = new_figure(11, 3.6, 1, len(FIGURES))
    for ax, (m, q) in zip(axes[0], FIGURES, strict=True):
        for x, (name, arm) in enumerate(arms.items()):
            figure = arm[f"{m}_{q}"]
            if figure is None:
                continue
            mean = figure["mean"] * 1000
            ax.bar(x, mean, color=f"C{x}", alpha=0.6, label=name)
            ax.errorbar(x, mean, yerr=[[mean - figure["min"] * 1000], [figure["max"] * 1000 - mean]], color="k",
                        capsize=6)
            ax.scatter([x] * len(arm["repeats"]), [r[f"{m}_{q}"] * 1000 for r in arm["repeats"]
                                                   if r[f"{m}_{q}"] is not None], color="k", s=10, zorder=3)
        ax.set_xticks(range(len(arms)), list(arms))
        ax.set_title(f"{m.upper()} {q} (ms, H100 time)")
    save(fig, out / "latency.png")
    fig, axes = new_figure(6, 4)
    ax = axes[0][0]
    for name, arm in arms.items():
        cdf(ax, [t * 1000 for t in arm["ttft_all"]], name)
    ax.set_xlabel("TTFT (ms, H100 time), all repeats")
    ax.set_ylabel("fraction of requests")
    ax.legend()
    save(fig, out / "ttft_cdf.png")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/results/links")
    out = Path(p.parse_args(argv).out)
    result = summarize(out)
    plot(out, result)
    for arm in result["arms"].values():  # the raw request lists stay in the runs' records.csv
        del arm["ttft_all"], arm["tpot_all"]
    write_markdown(out, result)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
