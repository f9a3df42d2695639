"""Suite: pdserve's routing policies against the routers people already use, on the same simulated fleet.

Sixteen simulated Llama-3.1-8B/H100 workers with a small KV cache each (``--num-blocks`` blocks of 16
tokens), colocated (each prefills and decodes its own requests). The arms:

* pdserve (round_robin, prefix, session, kv_aware): ``pdserve up`` on ``configs/sim-64-colocated.yaml`` cut
  to 16 workers; its front end drives the simulated engines over its gRPC workers.
* vllm-router (round_robin, cache_aware, kv_aware fed by the workers' ZMQ KV events) and sglang-router
  (cache_aware), each with its own defaults (cache threshold 0.3, balancing only once the busiest worker
  has 64 more requests in flight than the idlest and 1.5x as many), in front of the same simulated
  engines served with vLLM's HTTP API (``python -m worker.sim_http``, two processes of eight); installed
  from the package index in their own environment (``scripts/setup_peers.sh``).
* ceiling: one simulated worker with an unbounded cache at H100 speed, sent the same requests: the hit
  rate one shared cache would reach (the upper bound of any router's).

Every (trace, seed, arm) run gets fresh servers, so no run inherits another's caches; arms of one (trace,
seed) send the same requests. ``python -m bench.suites.peers_report`` turns the runs into tables and plots.

    python -m bench.suites.peers --out bench/results/peers                 # the committed run
    python -m bench.suites.peers --out /tmp/peers --traces chat --seeds 0 --arms pdserve-kv_aware,ceiling
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bench.suites.common import CpuSampler, bench, finish_run, git_state, load_index, log, put_run, serve_pdserve
from bench.suites.peer_servers import peers_venv, scrape, scratch_dir, serve_router, serve_sim_http

MODEL = "sim-llama-3.1-8b"
TOKENIZER = "~/.cache/pdserve/models/tiny-llama"  # the tokenizer configs/sim-64-colocated.yaml prepares
BLOCK_SIZE = 16  # the llama-3.1-8b-h100 profile's


@dataclass(frozen=True)
class Arm:
    """One router and policy. ``router`` is "pdserve", a key of ``peer_servers.ROUTERS`` or "ceiling"."""

    router: str
    policy: str


ARMS: dict[str, Arm] = {
    **{f"pdserve-{p}": Arm("pdserve", p) for p in ("round_robin", "prefix", "session", "kv_aware")},
    **{f"vllm-router-{p}": Arm("vllm-router", p) for p in ("round_robin", "cache_aware", "kv_aware")},
    "sglang-router-cache_aware": Arm("sglang-router", "cache_aware"),
    "ceiling": Arm("ceiling", "one shared unbounded cache"),
}

# Traces (pdserve-bench workload flags; ~3.5 tokens per pseudo-word with this tokenizer).
TRACES: dict[str, list[str]] = {
    # 32 sessions x 4 turns behind one shared ~3.5k-token system prompt; each turn adds ~700 tokens of
    # answer and ~700 of user text (turn 4 ~7.7k tokens).
    "chat": ["--workload", "chat", "--sessions", "32", "--turns", "4", "--num-requests", "128",
             "--system-words", "1000", "--user-words", "200", "--answer-words", "200"],
    # 128 questions over 16 documents of ~5.3k tokens, Zipf(1.1) popularity: the documents fit in the
    # fleet's caches together, not in one worker's.
    "docqa": ["--workload", "docqa", "--num-requests", "128", "--num-docs", "16", "--doc-words", "1500",
              "--question-words", "24", "--zipf-s", "1.1"],
    # 128 questions over 96 documents (~510k tokens), Zipf(0.6): more than the whole fleet caches
    # (16 x 1,500 blocks x 16 = 384k tokens), so every router's caches evict.
    "docqa-evict": ["--workload", "docqa", "--num-requests", "128", "--num-docs", "96", "--doc-words", "1500",
                    "--question-words", "24", "--zipf-s", "0.6"],
}

# Seeds: 0 was used while choosing the traces, the load and the cache size; reported runs use others.
TUNING_SEEDS = (0,)
REPORT_SEEDS = (101, 102, 103)


def sim_sets(ns: argparse.Namespace, arm: Arm) -> list[str]:
    """Profile overrides of one arm's simulated workers (the ceiling's cache is unbounded, at H100 speed)."""
    if arm.router == "ceiling":
        return ["speedup=1.0", "num_blocks=200000"]
    return [f"speedup={ns.speedup}", f"num_blocks={ns.num_blocks}"]


def run_arm(ns: argparse.Namespace, name: str, argv: list[str], run_dir: Path) -> dict[str, object]:
    """One run of ``pdserve-bench argv`` (its ``--target`` filled in) against arm ``name``, fresh servers."""
    arm, work = ARMS[name], scratch_dir(f"peers-{name}-")
    counts: dict[str, float] = {}
    if arm.router == "pdserve":
        overrides = ["decode.replicas=16", "decode.workers_per_process=8", f"decode.routing.profile={arm.policy}",
                     *(f"engine.args.{s}" for s in sim_sets(ns, arm))]
        with serve_pdserve("configs/sim-64-colocated.yaml", overrides) as server, \
                CpuSampler(server.proc.pid) as cpu:
            rc = bench(["--target", f"{name}={server.url}", *argv])
    else:
        workers, processes = (1, 1) if arm.router == "ceiling" else (16, 2)
        with serve_sim_http(workers, processes, sim_sets(ns, arm), TOKENIZER, MODEL, work) as sims, \
                CpuSampler(None) as cpu:
            if arm.router == "ceiling":
                rc = bench(["--target", f"{name}={sims[0].url}", *argv])
            else:
                with serve_router(arm.router, arm.policy, sims, MODEL, BLOCK_SIZE, work) as router:
                    rc = bench(["--target", f"{name}={router.url}", *argv])
            counts = {s.engine_id: scrape(s.url).get("vllm:request_success", 0.0) for s in sims}
        overrides = sim_sets(ns, arm)
    report = finish_run(run_dir, cpu)
    shutil.rmtree(work, ignore_errors=True)
    return {"rc": rc, "overrides": overrides, "worker_requests": counts,
            "host_busy_mean": report.host_busy_mean, "host_busy_p90": report.host_busy_p90}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/results/peers")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--traces", default=",".join(TRACES))
    p.add_argument("--seeds", default=",".join(map(str, REPORT_SEEDS)))
    p.add_argument("--rate", type=float, default=4.0, help="Poisson requests per wall-clock second")
    p.add_argument("--speedup", type=float, default=0.05,
                   help="engine speed vs an H100 (0.05: 20x slower, so the 2-core host keeps up); the offered "
                        "load in H100 time is rate / speedup")
    p.add_argument("--num-blocks", type=int, default=1500, help="KV blocks (16 tokens) per worker")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--timeout-s", type=float, default=120.0,
                   help="wall-clock seconds a request may take before it counts as failed (120 s = 6 s of H100 "
                        "time at speedup 0.05); also bounds a run whose router piles every request on one worker")
    p.add_argument("--slo-ttft-ms", type=float, default=1000.0, help="H100 time")
    p.add_argument("--slo-tpot-ms", type=float, default=50.0, help="H100 time")
    ns = p.parse_args()
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    peers_needed = any(ARMS[a].router in ("vllm-router", "sglang-router") for a in ns.arms.split(","))
    if peers_needed and not (peers_venv() / "bin" / "vllm-router").exists():
        raise SystemExit(f"{peers_venv()} has no peer routers: run scripts/setup_peers.sh")
    index = load_index(out, {
        "rate": ns.rate, "speedup": ns.speedup, "num_blocks": ns.num_blocks, "max_tokens": ns.max_tokens,
        "timeout_s": ns.timeout_s, "slo_h100_ms": {"ttft": ns.slo_ttft_ms, "tpot": ns.slo_tpot_ms},
        "tuning_seeds": list(TUNING_SEEDS), "traces": {t: TRACES[t] for t in ns.traces.split(",")},
        "arms": {a: {"router": ARMS[a].router, "policy": ARMS[a].policy} for a in ns.arms.split(",")}})
    for trace in ns.traces.split(","):
        for seed in ns.seeds.split(","):
            for name in ns.arms.split(","):
                run_dir = out / "runs" / trace / f"seed{seed}" / name
                shutil.rmtree(run_dir, ignore_errors=True)
                argv = ["--model", MODEL, *TRACES[trace], "--max-tokens", str(ns.max_tokens), "--seed", seed,
                        "--rate", str(ns.rate), "--timeout", f"{ns.timeout_s:g}", "--duration", "120",
                        "--total-duration", "600",
                        "--slo-ttft-ms", str(ns.slo_ttft_ms / ns.speedup),
                        "--slo-tpot-ms", str(ns.slo_tpot_ms / ns.speedup),
                        "--no-plots", "--no-progress", "--out", str(run_dir)]
                info = run_arm(ns, name, argv, run_dir)
                log(f"{trace} seed {seed} {name}: rc {info['rc']}, host busy mean {info['host_busy_mean']:.2f}")
                put_run(out, index, ("trace", "seed", "arm"), {
                    "trace": trace, "seed": int(seed), "arm": name, "dir": str(run_dir.relative_to(out)),
                    "argv": ["pdserve-bench", "--target", f"{name}=URL", *argv], **info, "git": git_state(),
                    "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())})
    log(f"done: {out / 'runs.json'}")


if __name__ == "__main__":
    main()
