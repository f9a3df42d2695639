"""``pdserve plan`` (also ``python -m bench.planner``): search the prefill:decode splits of N simulated workers
for the one with the highest goodput under TTFT and TPOT SLOs, print the table and the scale commands.

    pdserve plan --profile llama-3.1-8b-h100 --workload chat --workers 16 --rate 40 \\
        --slo-ttft-ms 500 --slo-tpot-ms 50 --out bench/results/tmp/plan-16

The workload flags are ``pdserve-bench``'s (same names, defaults and seed: the same requests). Rates and
latencies are in the profile's time (H100 time for ``llama-3.1-8b-h100``), whatever the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from bench.config import add_workload_args, parse_mix, parse_values, workload_params
from bench.metrics import Slo
from orchestrator.scheduler.profiles import PRESETS
from protocol.sim_profile import ProfileFileError, SimProfile, read_profile

from .goodput import RunLength
from .report import plan_json, render, write_outputs
from .search import PlanInputs, SplitResult, plan_splits
from .spec import FleetPolicy, model_size, scale_split
from .tokens import WorkloadSource, make_tokenizer, mean_prompt_tokens


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pdserve plan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("fleet")
    g.add_argument("--profile", default="llama-3.1-8b-h100", help="sim profile: a name in configs/sim-profiles/ "
                   "or a .yaml path (its speedup is ignored: the search runs in virtual time)")
    g.add_argument("--workers", type=int, required=True, help="workers (GPUs) to split")
    g.add_argument("--prefill-routing", default=FleetPolicy.prefill_routing, choices=sorted(PRESETS))
    g.add_argument("--decode-routing", default=FleetPolicy.decode_routing, choices=sorted(PRESETS))
    g.add_argument("--colocated-routing", default=FleetPolicy.colocated_routing, choices=sorted(PRESETS))
    g.add_argument("--prefill-queue-bound", type=int, default=FleetPolicy.prefill_queue_bound)
    g.add_argument("--decode-queue-bound", type=int, default=FleetPolicy.decode_queue_bound)
    g.add_argument("--min-remote-tokens", type=int, default=FleetPolicy.min_remote_tokens,
                   help="disaggregation.min_remote_tokens: shorter uncached prompts prefill on the decode worker")
    add_workload_args(p, num_requests=None, num_requests_help="requests per run, at every rate (default: sized by "
                      "--duration; a trace is replayed whole)")
    g = p.add_argument_group("objective and search")
    g.add_argument("--rate", required=True, help="request rate(s), req/s, comma list: p99s are reported there; "
                   "the first also starts each split's goodput search")
    g.add_argument("--slo-ttft-ms", type=float, required=True)
    g.add_argument("--slo-tpot-ms", type=float, required=True)
    g.add_argument("--duration", type=float, default=8.0,
                   help="seconds of arrivals per run (requests = rate x duration, at least --min-requests); "
                        "shorter runs are faster but overstate goodput (overload shows only after a while)")
    g.add_argument("--min-requests", type=int, default=200)
    g.add_argument("--splits", choices=["auto", "all"], default="auto",
                   help="all: every split; auto: all up to --grid + 1 workers, else a grid then a refinement")
    g.add_argument("--prefill-counts", help="search only these prefill counts (comma list; 0: colocated), on the "
                   "whole fleet: to check a recommendation made on a scaled model")
    g.add_argument("--max-simulated-workers", type=int, default=16,
                   help="bigger fleets are planned on a model of workers/k workers at rate/k (see README)")
    g.add_argument("--grid", type=int, default=16, help="prefill counts tried first by --splits auto")
    g.add_argument("--no-colocated", action="store_true", help="leave the colocated fleet out")
    g.add_argument("--rel-tol", type=float, default=0.05, help="goodput bisection stops within this ratio")
    g.add_argument("--jobs", type=int, default=1, help="splits searched in parallel (forked processes)")
    g.add_argument("--chain-turns", action="store_true",
                   help="send a session's turn only once its previous turn finished, as pdserve-bench does "
                        "(default: open loop; chained turns cap the load by the number of sessions)")
    g.add_argument("--tokenizer", help="local Hugging Face tokenizer folder (default: a built-in approximation)")
    g = p.add_argument_group("output")
    g.add_argument("--out", help="folder for plan.md, plan.json, plan.png (default: bench/results/tmp/plan-<UTC>)")
    g.add_argument("--no-plot", action="store_true")
    return p


def _policy(ns: argparse.Namespace) -> FleetPolicy:
    return FleetPolicy(prefill_routing=ns.prefill_routing, decode_routing=ns.decode_routing,
                       colocated_routing=ns.colocated_routing, prefill_queue_bound=ns.prefill_queue_bound,
                       decode_queue_bound=ns.decode_queue_bound, min_remote_tokens=ns.min_remote_tokens, seed=ns.seed)


def _check(ns: argparse.Namespace) -> list[str]:
    counts = ("workers", "grid", "jobs", "prefill_queue_bound", "decode_queue_bound", "min_requests",
              "max_simulated_workers")
    errors = [f"--{f.replace('_', '-')} must be >= 1" for f in counts if getattr(ns, f) < 1]
    if ns.num_requests is not None and ns.num_requests < 1:
        errors.append("--num-requests must be >= 1")
    errors += [f"--{f.replace('_', '-')} must be > 0" for f in ("slo_ttft_ms", "slo_tpot_ms", "rel_tol", "duration")
               if not getattr(ns, f) > 0]
    if ns.workers == 1 and ns.no_colocated:
        errors.append("one worker cannot be split: leave --no-colocated off")
    if ns.workload == "trace" and not ns.trace:
        errors.append("--workload trace needs --trace PATH")
    return errors


def _progress(simulated: int, fleet: int) -> Callable[[SplitResult], None]:
    scale = fleet / simulated

    def tell(result: SplitResult) -> None:
        att = ", ".join(f"{a.attainment:.0%} @{a.rate * scale:g}" for a in result.at_rates)
        label = scale_split(result.split, simulated, fleet).label
        print(f"[plan] {label:>14}: goodput {result.goodput * scale:8.2f} req/s, SLO met {att} "
              f"({result.runs} runs, {result.seconds:.1f} s)", file=sys.stderr, flush=True)

    return tell


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    errors = _check(ns)
    counts: tuple[int, ...] = ()
    try:
        rates = parse_values(ns.rate, "rate")
        profile = SimProfile.model_validate({**read_profile(ns.profile), "speedup": 1.0})
        params = workload_params(ns, parse_mix(ns.mix), ns.num_requests or 1)
        counts = tuple(int(c) for c in ns.prefill_counts.split(",")) if ns.prefill_counts else ()
    except (ValueError, ProfileFileError) as exc:
        errors.append(str(exc))
    if errors:
        print("pdserve plan: " + "; ".join(errors), file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    simulated = ns.workers if counts else model_size(ns.workers, ns.max_simulated_workers)
    scale = ns.workers / simulated
    source = WorkloadSource(ns.workload, params, ns.seed, make_tokenizer(ns.tokenizer), profile.vocab_size)
    slo = Slo(ns.slo_ttft_ms / 1000, ns.slo_tpot_ms / 1000)
    length = RunLength(ns.duration, ns.min_requests, ns.num_requests)
    try:
        sample, _ = source.get(length.requests_at(rates[0] / scale))
    except (ValueError, OSError) as exc:  # a bad trace file, a prompt with no token
        print(f"pdserve plan: {exc}", file=sys.stderr)
        return 2
    if len(sample) < min(ns.min_requests, length.requests_at(rates[0] / scale)):
        print(f"pdserve plan: warning: runs have only {len(sample)} requests (the whole workload); an attainment "
              "over so few says little, and a burst that short can pass at any rate", file=sys.stderr)
    inputs = PlanInputs(source, profile, _policy(ns), slo, tuple(r / scale for r in rates), length,
                        rel_tol=ns.rel_tol, chain_turns=ns.chain_turns)
    try:
        plan = plan_splits(inputs, simulated, mode=ns.splits, grid=ns.grid, colocated=not ns.no_colocated,
                           counts=counts, jobs=ns.jobs, on_result=_progress(simulated, ns.workers))
    except ValueError as exc:
        print(f"pdserve plan: {exc}", file=sys.stderr)
        return 2
    plan = replace(plan, scale=scale, fleet_workers=ns.workers)
    seconds = time.perf_counter() - t0
    model = "" if scale == 1 else f", planned on a model of {simulated} workers at 1/{scale:g} of the rate"
    header = (f"pdserve plan: {ns.workers} workers of {profile.model} (sim profile {ns.profile}{model}); workload "
              f"{ns.workload} (mean prompt {mean_prompt_tokens(sample):.0f} tokens, max_tokens {params.max_tokens}, "
              f"seed {ns.seed}, runs of {_length(length)}); {len(plan.results)} splits searched in {seconds:.0f} s")
    text = render(plan, slo, header)
    print(text)
    facts = {"argv": ["pdserve", "plan", *(sys.argv[1:] if argv is None else argv)], "profile": ns.profile,
             "workload": ns.workload, "params": asdict(params), "seed": ns.seed, "run_length": asdict(length),
             "tokenizer": ns.tokenizer or "built-in", "rates": list(rates),
             "slo_ms": {"ttft": ns.slo_ttft_ms, "tpot": ns.slo_tpot_ms}, "policy": asdict(inputs.policy),
             "rel_tol": ns.rel_tol, "chain_turns": ns.chain_turns, "simulated_workers": simulated,
             "scale": scale, "splits": ns.splits, "grid": ns.grid, "prefill_counts": list(counts)}
    out = Path(ns.out or time.strftime("bench/results/tmp/plan-%Y%m%d-%H%M%S", time.gmtime()))
    paths = write_outputs(out, plan, slo, text, plan_json(plan, facts, seconds), plot=not ns.no_plot)
    print(f"\nwrote {', '.join(map(str, paths))}", file=sys.stderr)
    return 0


def _length(length: RunLength) -> str:
    if length.fixed is not None:
        return f"{length.fixed} requests"
    return f"{length.duration_s:g} s of arrivals, >= {length.min_requests} requests"


if __name__ == "__main__":
    raise SystemExit(main())
