"""Check a plan on the real simulated fleet: ``pdserve up`` (sim workers over gRPC, the real orchestrator)
at the recommended split and its two neighbours, and a ``pdserve-bench`` rate sweep against each.

The planner runs the engines in-process in virtual time; this runs them as ``pdserve up`` does, in wall
time slowed by ``engine.args.speedup`` (0.02: 50x slower than H100 time) so a 2-core host keeps up. Every
split sees the same sweep, in H100 time: the recommended split's planned goodput times ``--points``; wall
rates are those times the speedup and the SLOs are divided by it. Each run has as many requests as the
planner's runs at the recommended goodput. The fleet's settings are the plan's (routing presets, queue
bounds, ``min_remote_tokens``) over ``configs/sim-64.yaml`` (colocated: ``configs/sim-64-colocated.yaml``).
Results: ``check.json``, ``check.md`` (goodput per split: the highest swept rate with >= 90% of requests
within both SLOs) and one ``pdserve-bench`` folder per split with the host's CPU samples.

    python -m bench.planner.check --plan bench/results/plan/plan.json --out bench/results/plan/check
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from bench.metrics import sweep_goodput
from bench.suites.common import CpuSampler, bench, git_state, log, machine, serve_pdserve, write_json
from bench.suites.report_util import markdown_table

from .goodput import RunLength
from .spec import Split

WORKLOAD_FLAGS = ("sessions", "turns", "system_words", "user_words", "answer_words", "num_docs", "doc_words",
                  "question_words", "zipf_s", "prompt_words")


def parse_split(text: str) -> Split:
    """``P:D`` (``0:N`` is colocated on N workers)."""
    p, _, d = text.partition(":")
    return Split(int(p), int(d))


def fleet_overrides(split: Split, policy: dict[str, Any], speedup: float) -> tuple[str, list[str]]:
    """The config file and ``--set`` overrides that start ``split`` with the plan's settings."""
    common = [f"engine.args.speedup={speedup}", f"decode.queue_bound={policy['decode_queue_bound']}"]
    if split.colocated:
        return "configs/sim-64-colocated.yaml", [*common, f"decode.replicas={split.decode}",
                                                  f"decode.routing.profile={policy['colocated_routing']}"]
    return "configs/sim-64.yaml", [*common, f"prefill.replicas={split.prefill}", f"decode.replicas={split.decode}",
                                   f"prefill.routing.profile={policy['prefill_routing']}",
                                   f"decode.routing.profile={policy['decode_routing']}",
                                   f"prefill.queue_bound={policy['prefill_queue_bound']}",
                                   f"disaggregation.min_remote_tokens={policy['min_remote_tokens']}"]


def bench_argv(inputs: dict[str, Any], rates_h100: list[float], speedup: float, requests: int,
               out: Path) -> list[str]:
    """``pdserve-bench`` arguments (after ``--target``) for the plan's workload, in wall-clock units."""
    params, slo = inputs["params"], inputs["slo_ms"]
    argv = ["--workload", inputs["workload"], "--num-requests", str(requests), "--max-tokens",
            str(params["max_tokens"]), "--seed", str(inputs["seed"]), "--ignore-eos"]
    for flag in WORKLOAD_FLAGS:
        if params.get(flag) is not None:
            argv += [f"--{flag.replace('_', '-')}", str(params[flag])]
    if params.get("trace_path"):
        argv += ["--trace", params["trace_path"]]
    slowest = min(rates_h100) * speedup
    per_request = (slo["ttft"] + (params["max_tokens"] - 1) * slo["tpot"]) / 1000 / speedup
    sending = requests / slowest * 1.2 + 60
    argv += ["--rate", ",".join(f"{r * speedup:.6g}" for r in rates_h100),
             "--slo-ttft-ms", f"{slo['ttft'] / speedup:.6g}", "--slo-tpot-ms", f"{slo['tpot'] / speedup:.6g}",
             "--timeout", f"{max(120.0, 3 * per_request):.0f}", "--duration", f"{sending:.0f}",
             "--total-duration", f"{len(rates_h100) * (sending + 3 * per_request) + 600:.0f}",
             "--no-plots", "--no-progress", "--out", str(out)]
    return argv


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plan", required=True, help="plan.json written by pdserve plan")
    p.add_argument("--split", action="append", help="P:D to run (default: the plan's check_splits)")
    p.add_argument("--points", default="0.8,1,1.25", help="sweep rates / the recommended goodput")
    p.add_argument("--speedup", type=float, default=0.02, help="engine.args.speedup (wall time = H100 / this)")
    p.add_argument("--out", required=True)
    p.add_argument("--dry-run", action="store_true", help="print the commands and the estimated time only")
    ns = p.parse_args(argv)
    plan = json.loads(Path(ns.plan).read_text())
    inputs = plan["inputs"]
    searched = {s["split"]: Split(s["prefill"], s["decode"]) for s in plan["splits"]}
    splits = [parse_split(s) for s in ns.split] if ns.split else [searched[s] for s in plan["check_splits"]]
    goodput = float(plan["goodput_req_s"])
    rates = [goodput * float(x) for x in ns.points.split(",")]
    requests = RunLength(**inputs["run_length"]).requests_at(goodput)
    wall = sum(requests / (r * ns.speedup) for r in rates) * len(splits)
    log(f"{len(splits)} splits x {len(rates)} rates, {requests} requests each: ~{wall / 3600:.1f} h of sending")
    out = Path(ns.out)
    planned = {s["split"]: s["goodput_req_s"] for s in plan["splits"]}
    rows: list[dict[str, Any]] = []
    for split in splits:
        config, overrides = fleet_overrides(split, inputs["policy"], ns.speedup)
        run_dir = out / _slug(split)
        args = bench_argv(inputs, rates, ns.speedup, requests, run_dir)
        if ns.dry_run:
            print(f"pdserve up --config {config} --launcher local " + " ".join(f"--set {o}" for o in overrides))
            print("pdserve-bench --target fleet=URL " + " ".join(args))
            continue
        with serve_pdserve(config, overrides) as server, CpuSampler(server.proc.pid) as cpu:
            rc = bench(["--target", f"{_slug(split)}={server.url}", *args])
        assert cpu.report is not None
        write_json(run_dir / "cpu.json", cpu.report)
        summary = json.loads((run_dir / "summary.json").read_text())
        points = [(run["load_value"] / ns.speedup, run["slo_attainment"]) for run in summary["runs"]]
        rows.append({"split": split.label, "planned_goodput": planned.get(split.label), "rc": rc,
                     "fleet_goodput": sweep_goodput(points) or 0.0, "attainment": points,
                     "host_busy_mean": cpu.report.host_busy_mean, "host_busy_p90": cpu.report.host_busy_p90})
        log(f"{split.label}: goodput {rows[-1]['fleet_goodput']:.1f} req/s (planned {planned.get(split.label)})")
    if not ns.dry_run:
        _write(out, plan, rows, rates, ns, requests)
    return 0


def _slug(split: Split) -> str:
    return f"colocated-{split.decode}" if split.colocated else f"{split.prefill}p{split.decode}d"


def _write(out: Path, plan: dict[str, Any], rows: list[dict[str, Any]], rates: list[float],
           ns: argparse.Namespace, requests: int) -> None:
    write_json(out / "check.json", {"plan": ns.plan, "recommended": plan["recommended"], "rates_h100": rates,
                                    "speedup": ns.speedup, "requests_per_run": requests, "rows": rows,
                                    "machine": machine(), "git": git_state()})
    table = [[r["split"], "-" if r["planned_goodput"] is None else f"{r['planned_goodput']:.1f}",
              f"{r['fleet_goodput']:.1f}", ", ".join("-" if a is None else f"{a:.0%}" for _, a in r["attainment"]),
              f"{r['host_busy_mean']:.2f} / {r['host_busy_p90']:.2f}"] for r in rows]
    lines = [f"Recommended by the plan: {plan['recommended']}. Sweep (H100 req/s): "
             + ", ".join(f"{r:.1f}" for r in rates), "",
             markdown_table(["split", "planned goodput", "fleet goodput", "SLO met per rate", "host busy (mean / p90)"],
                            table, "lllll")]
    best = max(rows, key=lambda r: r["fleet_goodput"], default=None)
    if best is not None:
        same = math.isclose(best["fleet_goodput"], next((r["fleet_goodput"] for r in rows
                                                         if r["split"] == plan["recommended"]), -1.0))
        lines += ["", f"highest fleet goodput: {best['split']} "
                  f"({'the recommended split' if same else 'not the recommended split'})"]
    (out / "check.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
