"""Routing decision time at fleet scale: the whole placement of an 8,192-token prompt, as
``RequestFlow.place`` runs it minus the RPCs, against a prefix index of 64 prefill and 16 decode workers
holding 1,000,000 blocks.

One **placement** is timed from the token-id list to the seat: hash the prompt (``make_request``), match it
(``PrefixIndex.match``), plan local or remote prefill (``Router.plan``, which chooses the local decode
candidate with the decode pipeline when a local prefill could pay), then either the local seat or the
``kv_aware`` prefill pipeline and the ``decode`` pipeline priced by the transfer from the prefill host.
Three prompts: cached on 4 prefill workers (remote), cached nowhere (remote), cached on 2 decode workers
(local, with the preview). Each part is also timed alone on the first prompt.

The index is filled through ``PrefixIndex.apply`` with ``BlockStored`` events (so the fill rate is the
event path's throughput): each worker holds a few shared system prompts and its own long conversation
chains. Memory per indexed block is the tracemalloc delta of the fill divided by the indexed blocks. Every
timed sample (ns) is written to a CSV next to the JSON result (``--samples``; default ``<out>_samples.csv``).

    python -m bench.routing.decision_latency --out bench/results/routing/decision_latency.json
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.planner.spec import FleetPolicy
from bench.suites.common import git
from orchestrator.scheduler.decision import Decision
from orchestrator.scheduler.hashing import block_hash_list, make_salt
from orchestrator.scheduler.prefix_index import PrefixIndex
from orchestrator.scheduler.request import WorkerState
from protocol.types import BlockStored, KvEventBatch

MODEL = "bench-model"
KV_BYTES_PER_TOKEN = 131_072  # Llama-3.1-8B in bf16: 32 layers x 8 KV heads x 128 dims x 2 (K, V) x 2 bytes


@dataclass(frozen=True)
class FleetShape:
    workers: int  # prefill workers
    blocks: int  # indexed (worker, block) pairs to reach, both pools together
    block_size: int
    decode_workers: int = 16
    system_prompts: int = 16
    system_blocks: int = 64
    chain_blocks: int = 256


def _fill(index: PrefixIndex, shape: FleetShape, rng: np.random.Generator, ids: list[str],
          holders: dict[str, list[int]]) -> None:
    """Every worker gets every system prompt, then its own chains (each continuing a system prompt)
    until the index holds ``shape.blocks`` blocks; ``holders`` maps a worker to a prompt it holds in full."""
    bs = shape.block_size
    seqs = dict.fromkeys(ids, 0)

    def send(w: str, tokens: list[int], parent: int | None) -> int:
        n = len(tokens) // bs
        hashes = tuple(int(h) for h in rng.integers(1, 2**63, n))
        index.apply(w, KvEventBatch(seqs[w], 0.0, (BlockStored(hashes, parent, tuple(tokens), bs),)))
        seqs[w] += 1
        return hashes[-1]

    systems = [rng.integers(0, 150_000, shape.system_blocks * bs).tolist() for _ in range(shape.system_prompts)]
    roots = {w: [send(w, s, None) for s in systems] for w in ids}
    for w, tokens in holders.items():
        send(w, tokens, None)
    i = 0
    while index.size < shape.blocks:
        room = min(shape.chain_blocks, shape.blocks - index.size)
        tokens = rng.integers(0, 150_000, room * bs).tolist()
        w = ids[i % len(ids)]
        send(w, tokens, roots[w][int(rng.integers(shape.system_prompts))])
        i += 1


def _workers(prefix: str, n: int, rng: np.random.Generator, queue_bound: int) -> tuple[WorkerState, ...]:
    return tuple(WorkerState(f"{prefix}{i}", host=f"{prefix}h{i // 8}", running=int(rng.integers(0, 8)),
                             waiting=int(rng.integers(0, 4)), kv_usage=float(rng.random()),
                             queued_prefill_tokens=int(rng.integers(0, 8_000)), queue_bound=queue_bound,
                             prefill_tokens_per_s=float(rng.choice([8_000.0, 12_000.0])))
                 for i in range(n))


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    arr = np.array(samples_ns, dtype=np.float64) / 1e3
    return {"p50_us": round(float(np.percentile(arr, 50)), 1), "p99_us": round(float(np.percentile(arr, 99)), 1),
            "max_us": round(float(arr.max()), 1), "mean_us": round(float(arr.mean()), 1)}


def _time(fn: Callable[[], object], iters: int) -> list[int]:
    out = []
    for _ in range(iters):
        t0 = time.perf_counter_ns()
        fn()
        out.append(time.perf_counter_ns() - t0)
    return out


def _commit() -> str | None:
    """The checkout's commit, suffixed ``-dirty`` when tracked files differ from it; None outside git."""
    head = git("rev-parse", "HEAD")
    return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "") if head else None


def run(shape: FleetShape, prompt_tokens: int, iters: int, seed: int,
        min_remote_tokens: int = 256) -> tuple[dict[str, object], dict[str, list[int]]]:
    """The JSON result and the raw samples (series name -> ns per iteration)."""
    rng = np.random.default_rng(seed)
    prefill_hit, miss, decode_hit = (rng.integers(0, 150_000, prompt_tokens).tolist() for _ in range(3))
    prefill_ids = [f"w{i}" for i in range(shape.workers)]
    decode_ids = [f"d{i}" for i in range(shape.decode_workers)]
    holders = {**{w: prefill_hit for w in prefill_ids[:4]}, **{d: decode_hit for d in decode_ids[:2]}}

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    index = PrefixIndex(MODEL, shape.block_size)
    t0 = time.perf_counter()
    _fill(index, shape, rng, prefill_ids + decode_ids, holders)
    fill_s = time.perf_counter() - t0
    gc.collect()
    index_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()

    prefill = _workers("w", shape.workers, rng, 16)
    decode = _workers("d", shape.decode_workers, rng, 256)
    host = {w.worker_id: w.host for w in prefill}
    router = FleetPolicy(min_remote_tokens=min_remote_tokens, seed=seed).router(MODEL, shape.block_size, index)

    def place(tokens: list[int]) -> tuple[str, Decision, Decision | None]:
        """``RequestFlow.place`` without its RPCs: (plan reason, decode seat, prefill pick or None)."""
        req = router.make_request(tokens, kv_bytes_per_token=KV_BYTES_PER_TOKEN)
        match = router.match(req)
        plan = router.plan(req, prefill, decode, match=match)
        if plan.local is not None:
            return plan.reason, plan.local, None
        pick = router.route_prefill(req, prefill, match=match, now=0.0)
        return plan.reason, router.route_decode(req, decode, source_host=host[pick.worker_id]), pick

    salt = make_salt(MODEL, None)
    bs = shape.block_size
    req = router.make_request(prefill_hit, kv_bytes_per_token=KV_BYTES_PER_TOKEN)
    match = router.match(req)
    first = router.route_prefill(req, prefill, match=match)
    local_req = router.make_request(decode_hit, kv_bytes_per_token=KV_BYTES_PER_TOKEN)
    local_match = router.match(local_req)
    arr = np.asarray(prefill_hit, dtype=np.uint32)
    for tokens in (prefill_hit, miss, decode_hit):
        for _ in range(50):  # warm up
            place(tokens)
    samples = {
        "placement_prefill_hit": _time(lambda: place(prefill_hit), iters),
        "placement_miss": _time(lambda: place(miss), iters),
        "placement_decode_hit_local": _time(lambda: place(decode_hit), iters),
        "part_hash_from_list": _time(lambda: block_hash_list(prefill_hit, bs, salt), iters),
        "part_hash_from_uint32_array": _time(lambda: block_hash_list(arr, bs, salt), iters),
        "part_make_request": _time(lambda: router.make_request(prefill_hit, kv_bytes_per_token=KV_BYTES_PER_TOKEN),
                                   iters),
        "part_match": _time(lambda: router.match(req), iters),
        "part_plan_remote": _time(lambda: router.plan(req, prefill, decode, match=match), iters),
        "part_plan_local_with_preview": _time(lambda: router.plan(local_req, prefill, decode, match=local_match),
                                              iters),
        "part_prefill_pipeline": _time(lambda: router.route_prefill(req, prefill, match=match), iters),
        "part_decode_pipeline": _time(lambda: router.route_decode(req, decode, source_host=host[first.worker_id]),
                                      iters),
    }
    result: dict[str, object] = {
        "commit": _commit(),
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        "shape": {**shape.__dict__, "prompt_tokens": prompt_tokens, "iters": iters, "seed": seed,
                  "min_remote_tokens": min_remote_tokens, "kv_bytes_per_token": KV_BYTES_PER_TOKEN},
        "index": {"blocks": index.size, "distinct_hashes": index.stats().hashes,
                  "bytes_per_block": round(index_bytes / index.size, 1), "bytes_total": index_bytes,
                  "fill_seconds_under_tracemalloc": round(fill_s, 2)},
        "placements": {name: str(place(tokens)) for name, tokens in
                       (("prefill_hit", prefill_hit), ("miss", miss), ("decode_hit", decode_hit))},
        "hit_case_matched_blocks": dict(sorted(match.items())),
        "percentiles": {name: _percentiles(ns) for name, ns in samples.items()},
    }
    return result, samples


def write_samples(path: Path, samples: dict[str, list[int]]) -> None:
    """One row per timed iteration: ``series,iteration,ns``."""
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["series", "iteration", "ns"])
        for name, values in samples.items():
            out.writerows((name, i, ns) for i, ns in enumerate(values))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=64, help="prefill workers")
    parser.add_argument("--decode-workers", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=1_000_000)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=8192)
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-remote-tokens", type=int, default=256)
    parser.add_argument("--out", default=None, help="write the JSON result here")
    parser.add_argument("--samples", default=None, help="raw samples CSV (default: <out>_samples.csv)")
    args = parser.parse_args(argv)
    shape = FleetShape(args.workers, args.blocks, args.block_size, decode_workers=args.decode_workers)
    result, samples = run(shape, args.prompt_tokens, args.iters, args.seed, args.min_remote_tokens)
    result["argv"] = list(sys.argv[1:] if argv is None else argv)
    samples_path = Path(args.samples) if args.samples else (
        Path(args.out).with_name(Path(args.out).stem + "_samples.csv") if args.out else None)
    if samples_path is not None:
        result["samples_file"] = samples_path.name
        write_samples(samples_path, samples)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
