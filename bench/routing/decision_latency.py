"""Routing decision time at fleet scale: hash an 8,192-token prompt, match it against a prefix index of
64 workers holding 1,000,000 blocks, and score the 64 workers with the ``kv_aware`` profile.

The index is filled through ``PrefixIndex.apply`` with ``BlockStored`` events (so the fill rate is the
event path's throughput): each worker holds a few shared system prompts and its own long conversation
chains. Memory per indexed block is the tracemalloc delta of the fill divided by the indexed blocks.

    python -m bench.routing.decision_latency --out bench/results/routing/decision_latency.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from orchestrator.scheduler.hashing import block_hash_list, make_salt
from orchestrator.scheduler.prefix_index import PrefixIndex
from orchestrator.scheduler.profiles import PRESETS, build_pipeline
from orchestrator.scheduler.request import RouteRequest, WorkerState
from protocol.types import BlockStored, KvEventBatch

MODEL = "bench-model"


@dataclass(frozen=True)
class FleetShape:
    workers: int
    blocks: int  # indexed (worker, block) pairs to reach
    block_size: int
    system_prompts: int = 16
    system_blocks: int = 64
    chain_blocks: int = 256


def _fill(index: PrefixIndex, shape: FleetShape, rng: np.random.Generator, target: list[int]) -> None:
    """Every worker gets every system prompt, then its own chains (each continuing a system prompt)
    until the index holds ``shape.blocks`` blocks; the first 4 workers also hold ``target`` in full."""
    bs = shape.block_size
    seqs = [0] * shape.workers

    def send(w: int, tokens: list[int], parent: int | None) -> int:
        n = len(tokens) // bs
        hashes = tuple(int(h) for h in rng.integers(1, 2**63, n))
        index.apply(f"w{w}", KvEventBatch(seqs[w], 0.0, (BlockStored(hashes, parent, tuple(tokens), bs),)))
        seqs[w] += 1
        return hashes[-1]

    systems = [rng.integers(0, 150_000, shape.system_blocks * bs).tolist() for _ in range(shape.system_prompts)]
    roots = [[send(w, s, None) for s in systems] for w in range(shape.workers)]
    for w in range(4):
        send(w, target, None)
    w = 0
    while index.size < shape.blocks:
        room = min(shape.chain_blocks, shape.blocks - index.size)
        tokens = rng.integers(0, 150_000, room * bs).tolist()
        send(w, tokens, roots[w][int(rng.integers(shape.system_prompts))])
        w = (w + 1) % shape.workers


def _workers(n: int, rng: np.random.Generator) -> tuple[WorkerState, ...]:
    return tuple(WorkerState(f"w{i}", host=f"h{i // 8}", running=int(rng.integers(0, 8)),
                             waiting=int(rng.integers(0, 4)), kv_usage=float(rng.random()),
                             queued_prefill_tokens=int(rng.integers(0, 8_000)), queue_bound=16,
                             prefill_tokens_per_s=float(rng.choice([8_000.0, 12_000.0])))
                 for i in range(n))


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    arr = np.array(samples_ns, dtype=np.float64) / 1e3
    return {"p50_us": round(float(np.percentile(arr, 50)), 1), "p99_us": round(float(np.percentile(arr, 99)), 1),
            "max_us": round(float(arr.max()), 1), "mean_us": round(float(arr.mean()), 1)}


def _time(fn: Callable[[], object], iters: int) -> Iterator[int]:
    for _ in range(iters):
        t0 = time.perf_counter_ns()
        fn()
        yield time.perf_counter_ns() - t0


def run(shape: FleetShape, prompt_tokens: int, iters: int, seed: int) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 150_000, prompt_tokens).tolist()
    miss = rng.integers(0, 150_000, prompt_tokens).tolist()

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    index = PrefixIndex(MODEL, shape.block_size)
    t0 = time.perf_counter()
    _fill(index, shape, rng, target)
    fill_s = time.perf_counter() - t0
    gc.collect()
    index_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()

    workers = _workers(shape.workers, rng)
    pipeline = build_pipeline(PRESETS["kv_aware"])
    salt = make_salt(MODEL, None)
    bs = shape.block_size

    def decide(tokens: list[int]) -> object:
        hashes = block_hash_list(tokens, bs, salt)
        match = index.match(hashes)
        req = RouteRequest(tuple(hashes), len(tokens), bs, request_id="r")
        return pipeline.route(req, workers, match)

    hit_decision = decide(target)
    hashes = block_hash_list(target, bs, salt)
    match = index.match(hashes)
    req = RouteRequest(tuple(hashes), len(target), bs)
    arr = np.asarray(target, dtype=np.uint32)
    for _ in range(50):  # warm up
        decide(target)
    result: dict[str, object] = {
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        "shape": {**shape.__dict__, "prompt_tokens": prompt_tokens, "iters": iters, "seed": seed},
        "index": {"blocks": index.size, "distinct_hashes": index.stats().hashes,
                  "bytes_per_block": round(index_bytes / index.size, 1), "bytes_total": index_bytes,
                  "fill_seconds_under_tracemalloc": round(fill_s, 2)},
        "hit_case": {"matched_blocks": dict(sorted(match.items())), "decision": str(hit_decision)},
        "decision_full_hit": _percentiles(list(_time(lambda: decide(target), iters))),
        "decision_miss": _percentiles(list(_time(lambda: decide(miss), iters))),
        "parts_full_hit": {
            "hash_from_list": _percentiles(list(_time(lambda: block_hash_list(target, bs, salt), iters))),
            "hash_from_uint32_array": _percentiles(list(_time(lambda: block_hash_list(arr, bs, salt), iters))),
            "match": _percentiles(list(_time(lambda: index.match(hashes), iters))),
            "score_and_pick": _percentiles(list(_time(lambda: pipeline.route(req, workers, match), iters))),
        },
    }
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=1_000_000)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=8192)
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the JSON result here")
    args = parser.parse_args(argv)
    result = run(FleetShape(args.workers, args.blocks, args.block_size), args.prompt_tokens, args.iters, args.seed)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
