"""Suite: the latency a router adds over calling a worker directly, on zero-compute simulated workers.

Simulated Llama-3.1-8B workers whose step costs are all zero (tokens come as fast as the event loop
turns), served with vLLM's HTTP API (``python -m worker.sim_http``, three workers in one process): the
direct target is worker 0, vllm-router fronts worker 1 and sglang-router worker 2 (their cache-aware
policy), so no target finds another's prompts cached; pdserve's front end (``kv_aware``) fronts its own
zero-compute worker, driven over pdserve's gRPC as in production. One ``pdserve-bench`` run sends the same
short unique prompts to the four targets, closed loop at each concurrency, the targets alternating, the
whole sweep repeated ``--repeats`` times. ``python -m bench.suites.overhead_report`` computes each target's
added latency over the direct call per repeat.

    python -m bench.suites.overhead --out bench/results/overhead
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from bench.suites.common import CpuSampler, bench, finish_run, git_state, log, machine, serve_pdserve, write_json
from bench.suites.peer_servers import scratch_dir, serve_router, serve_sim_http

MODEL = "sim-llama-3.1-8b"
TOKENIZER = "~/.cache/pdserve/models/tiny-llama"
ZERO_COMPUTE = ["step_base_s=0", "prefill_per_token_s=0", "prefill_attn_per_pair_s=0", "decode_per_seq_s=0",
                "decode_per_ctx_token_s=0", "speedup=1.0"]
SEED = 201  # reported; 0 was used while writing the suite


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/results/overhead")
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument("--num-requests", type=int, default=400, help="requests per (target, concurrency, repeat)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prompt-words", type=int, default=60)
    p.add_argument("--max-tokens", type=int, default=16)
    ns = p.parse_args()
    out = Path(ns.out)
    shutil.rmtree(out / "run", ignore_errors=True)
    work = scratch_dir("overhead-")
    pdserve_overrides = ["decode.replicas=1", "decode.workers_per_process=1", "decode.routing.profile=kv_aware",
                         *(f"engine.args.{s}" for s in ZERO_COMPUTE)]
    with serve_sim_http(3, 1, ZERO_COMPUTE, TOKENIZER, MODEL, work) as sims, \
            serve_router("vllm-router", "cache_aware", sims[1:2], MODEL, 16, work) as vllm_router, \
            serve_router("sglang-router", "cache_aware", sims[2:3], MODEL, 16, work) as sglang_router, \
            serve_pdserve("configs/sim-64-colocated.yaml", pdserve_overrides) as pdserve:
        targets = {"direct": sims[0].url, "pdserve": pdserve.url, "vllm-router": vllm_router.url,
                   "sglang-router": sglang_router.url}
        argv = [arg for name, url in targets.items() for arg in ("--target", f"{name}={url}")]
        argv += ["--model", MODEL, "--workload", "unique", "--prompt-words", str(ns.prompt_words),
                 "--max-tokens", str(ns.max_tokens),
                 "--num-requests", str(ns.num_requests), "--concurrency", ns.concurrency, "--repeats",
                 str(ns.repeats), "--seed", str(SEED), "--timeout", "60", "--no-plots", "--no-progress",
                 "--out", str(out / "run")]
        with CpuSampler(None) as cpu:
            rc = bench(argv)
    report = finish_run(out / "run", cpu)
    shutil.rmtree(work, ignore_errors=True)
    index = {"machine": machine(), "git": git_state(), "rc": rc, "zero_compute": ZERO_COMPUTE,
             "policies": {"pdserve": "kv_aware", "vllm-router": "cache_aware", "sglang-router": "cache_aware"},
             "argv": ["pdserve-bench", *(a if "=http" not in a else a.split("=")[0] + "=URL" for a in argv)],
             "host_busy_mean": report.host_busy_mean,
             "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    write_json(out / "runs.json", index)
    log(f"done: rc {rc}, {json.dumps(index['git'])}")


if __name__ == "__main__":
    main()
