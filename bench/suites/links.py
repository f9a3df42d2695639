"""Suite (c): decode placement by load and measured links against load alone, on a simulated fleet in two
racks (``configs/sim-2racks.yaml``: 16 prefill + 16 decode H100 workers, four to a host, one 400 Gb/s
NIC per host, 100 Gb/s between racks).

Two arms differ only in the decode pool's profile: ``links`` is the ``decode`` preset (least loaded, KV
usage and the transfer cost priced with the link table the orchestrator measures from the decode workers'
pull reports); ``load`` is the same profile without the transfer-cost term. For each repeat and arm (the
arms alternate, so slow drift of the host hits both): a fresh ``pdserve up`` (the table is learnt from
nothing, and no run inherits caches), one open-loop Poisson run of ``pdserve-bench`` with unique long
prompts, the host's CPU sampled meanwhile, and the learnt link table read from ``/metrics`` before the
server stops. Repeat ``k`` of both arms uses workload seed ``k``. ``python -m bench.suites.links_report``
turns the runs into tables and plots (in H100 time: wall-clock latency x speedup).

    python -m bench.suites.links --out bench/results/links               # 2 arms x 3 repeats, ~25 min
    python -m bench.suites.links --out /tmp/links --repeats 1 --num-requests 40 --rate-h100 20   # smoke
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import urllib.request
from pathlib import Path

from bench.suites.common import CpuSampler, bench, finish_run, git_state, load_index, log, put_run, serve_pdserve

CONFIG = "configs/sim-2racks.yaml"
# The decode preset without transfer_cost (its weights otherwise as in orchestrator.scheduler.profiles).
LOAD_ONLY = ("{name: decode_load_only, filters: [healthy, kv_headroom], scorers: [{name: least_loaded, weight: 1.0}, "
             "{name: kv_usage, weight: 0.5}, {name: local_prefill, weight: 2.0}]}")
ARMS: dict[str, list[str]] = {
    "links": ["decode.routing.profile=decode"],
    "load": [f"decode.routing.profile={LOAD_ONLY}"],
}


def link_table(url: str) -> list[str]:
    """The ``pdserve_link_*`` lines of the server's ``/metrics`` (the table it learnt)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    return [line for line in text.splitlines() if line.startswith("pdserve_link_")]


def run_one(out: Path, arm: str, repeat: int, ns: argparse.Namespace) -> dict[str, object]:
    overrides = [f"engine.args.speedup={ns.speedup}", *ARMS[arm]]
    run_dir = out / "runs" / arm / f"rep{repeat}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    rate = ns.rate_h100 * ns.speedup  # wall-clock requests per second
    argv = ["--target", f"{arm}=URL", "--workload", "unique", "--prompt-words", str(ns.prompt_words),
            "--num-requests", str(ns.num_requests), "--max-tokens", str(ns.max_tokens), "--ignore-eos",
            "--rate", f"{rate:g}", "--seed", str(repeat), "--timeout", "600", "--duration", str(ns.duration),
            "--total-duration", str(ns.duration + 600), "--no-plots", "--no-progress", "--out", str(run_dir)]
    with serve_pdserve(CONFIG, overrides) as server:
        argv[1] = f"{arm}={server.url}"
        with CpuSampler(server.proc.pid) as cpu:
            rc = bench(argv)
        table = link_table(server.url)
    (run_dir / "links.prom").write_text("\n".join(table) + "\n")
    report = finish_run(run_dir, cpu)
    log(f"{arm} repeat {repeat}: rc {rc}, host busy mean {report.host_busy_mean:.2f} "
        f"p90 {report.host_busy_p90:.2f}, server {report.server_cores_mean:.2f} cores")
    return {"arm": arm, "repeat": repeat, "seed": repeat, "dir": str(run_dir.relative_to(out)), "rc": rc,
            "config": CONFIG, "overrides": overrides, "argv": ["pdserve-bench", *argv],
            "host_busy_mean": report.host_busy_mean, "host_busy_p90": report.host_busy_p90,
            "server_cores_mean": report.server_cores_mean, "loadavg_start": report.loadavg_start,
            "git": git_state(), "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/results/links")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--speedup", type=float, default=0.05,
                   help="engine.args.speedup: 0.05 = engines 20x slower than H100 time (the host keeps up)")
    p.add_argument("--rate-h100", type=float, default=36.0,
                   help="Poisson requests per second of H100 time (~45%% of the 16 prefill workers' capacity on "
                        "~5k-token prompts); the client sends rate-h100 x speedup per wall-clock second")
    p.add_argument("--num-requests", type=int, default=300)
    p.add_argument("--prompt-words", type=int, default=1500, help="~3.5 tokens per word: ~5.3k-token prompts")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--duration", type=int, default=600, help="most wall-clock seconds of sending per run")
    args = sys.argv[1:] if argv is None else argv
    ns = p.parse_args(args)
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    arms = ns.arms.split(",")
    index = load_index(out, {"config": CONFIG, "arms": {a: ARMS[a] for a in arms}, "speedup": ns.speedup,
                             "rate_h100": ns.rate_h100, "num_requests": ns.num_requests,
                             "prompt_words": ns.prompt_words, "max_tokens": ns.max_tokens,
                             "command": " ".join(["python", "-m", "bench.suites.links", *args])})
    for repeat in range(ns.repeats):
        for arm in arms if repeat % 2 == 0 else arms[::-1]:
            put_run(out, index, ("arm", "repeat"), run_one(out, arm, repeat, ns))
    log(f"done: {out / 'runs.json'}")


if __name__ == "__main__":
    main()
