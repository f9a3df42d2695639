"""Multi-turn routing benchmark: block hit rate against a single-shared-cache oracle, request balance
and simulated TTFT for each prefill policy, over several trace seeds.

    python -m bench.routing.multiturn --out bench/results/routing/multiturn_events.json
    python -m bench.routing.multiturn --approx --out bench/results/routing/multiturn_approx.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict

import numpy as np

from bench.planner.spec import FleetPolicy
from orchestrator.scheduler.approx_index import ApproxPrefixIndex
from orchestrator.scheduler.prefix_index import PrefixIndex
from orchestrator.scheduler.router import PrefixMatcher, Router
from protocol.types import KvEventBatch

from .sim import FleetShape, RunResult, simulate
from .trace import TraceShape, make_trace

MODEL = "bench-model"
POLICIES = ("round_robin", "least_loaded", "prefix", "session", "kv_aware", "kv_aware_softmax")


def _router(policy: str, fleet: FleetShape, approx: bool, seed: int
            ) -> tuple[Router, Callable[[str, KvEventBatch], object] | None]:
    index: PrefixMatcher
    feed: Callable[[str, KvEventBatch], object] | None
    if approx:
        index, feed = ApproxPrefixIndex(capacity_blocks=fleet.blocks_per_worker, ttl_s=600.0), None
    else:
        exact = PrefixIndex(MODEL, fleet.block_size)
        index, feed = exact, exact.apply
    return FleetPolicy(prefill_routing=policy, seed=seed).router(MODEL, fleet.block_size, index), feed


def summarize(result: RunResult) -> dict[str, object]:
    counts = list(result.requests_per_worker.values())
    tally = result.tally
    oracle_rate = result.oracle_cached_tokens / tally.prompt_tokens
    ttft = np.array(result.ttft_s)
    return {
        "requests_per_worker": result.requests_per_worker,
        "max_over_min": round(max(counts) / min(counts), 3) if min(counts) else float("inf"),
        "hit_rate": round(tally.observed_hit_rate, 4),
        "oracle_hit_rate": round(oracle_rate, 4),
        "hit_vs_oracle": round(tally.observed_hit_rate / oracle_rate, 4),
        "router_predicted_hit_rate": round(tally.predicted_hit_rate, 4),
        "observed_over_predicted": round(tally.realised_ratio, 4),
        "ttft_p50_s": round(float(np.percentile(ttft, 50)), 3),
        "ttft_p99_s": round(float(np.percentile(ttft, 99)), 3),
        "utilization": round(result.utilization, 3),
        "evicted_blocks": result.evictions,
        "reasons": dict(sorted(result.reasons.items())),
    }


def _aggregate(rows: list[dict[str, object]]) -> dict[str, object]:
    def col(key: str) -> list[float]:
        return [float(r[key]) for r in rows]  # type: ignore[arg-type]

    return {
        "hit_vs_oracle_mean": round(float(np.mean(col("hit_vs_oracle"))), 4),
        "hit_vs_oracle_min": round(min(col("hit_vs_oracle")), 4),
        "max_over_min_median": round(float(np.median(col("max_over_min"))), 3),
        "max_over_min_worst": round(max(col("max_over_min")), 3),
        "seeds_meeting_both_targets": sum(
            float(r["hit_vs_oracle"]) >= 0.98 and float(r["max_over_min"]) <= 1.5 for r in rows),  # type: ignore[arg-type]
        "ttft_p50_s_mean": round(float(np.mean(col("ttft_p50_s"))), 3),
        "ttft_p99_s_mean": round(float(np.mean(col("ttft_p99_s"))), 3),
        "utilization_mean": round(float(np.mean(col("utilization"))), 3),
    }


def run(trace_shape: TraceShape, fleet: FleetShape, seeds: list[int], approx: bool) -> dict[str, object]:
    per_seed: dict[str, list[dict[str, object]]] = {p: [] for p in POLICIES}
    for seed in seeds:
        trace = make_trace(trace_shape, seed)
        for policy in POLICIES:
            router, feed = _router(policy, fleet, approx, seed)
            per_seed[policy].append({"seed": seed, **summarize(simulate(trace, fleet, router, feed))})
    return {"trace": asdict(trace_shape), "fleet": asdict(fleet), "seeds": seeds,
            "index": "approximate (insert on routing, LRU + TTL)" if approx else "exact (KV events)",
            "summary": {p: _aggregate(rows) for p, rows in per_seed.items()}, "runs": per_seed}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="multi-turn routing benchmark over simulated caches")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--tokens-per-s", type=float, default=FleetShape.tokens_per_s)
    parser.add_argument("--queue-bound", type=int, default=None)
    parser.add_argument("--approx", action="store_true", help="approximate index (no KV events)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    fleet = FleetShape(workers=args.workers, tokens_per_s=args.tokens_per_s, queue_bound=args.queue_bound)
    result = run(TraceShape(sessions=args.sessions, turns=args.turns), fleet, args.seeds, args.approx)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(json.dumps(result, indent=2) + "\n")
    print("| policy | hit/oracle mean (min) | max/min median (worst) | seeds meeting both | TTFT p50 / p99 s |")
    print("|---|---|---|---|---|")
    for name, row in result["summary"].items():  # type: ignore[attr-defined]
        print(f"| {name} | {row['hit_vs_oracle_mean']:.3f} ({row['hit_vs_oracle_min']:.3f}) | "
              f"{row['max_over_min_median']:.2f} ({row['max_over_min_worst']:.2f}) | "
              f"{row['seeds_meeting_both_targets']}/{len(args.seeds)} | "
              f"{row['ttft_p50_s_mean']:.2f} / {row['ttft_p99_s_mean']:.2f} |")


if __name__ == "__main__":
    main()
