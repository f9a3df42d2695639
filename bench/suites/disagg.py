"""Suite: disaggregated against colocated serving on the same 16 simulated H100s.

Fleets: ``disagg-8p8d`` and ``disagg-12p4d`` (``configs/sim-64.yaml`` cut to 8 prefill + 8 decode and
12 + 4 workers) and ``colocated`` (``configs/sim-64-colocated.yaml`` cut to 16 workers that prefill and
decode); prefill (or colocated) placement by ``kv_aware``, decode by the ``decode`` preset. The trace
(``make_trace``, seeded) is a steady Poisson stream of chat-sized requests (about 1.75k prompt tokens,
128 output tokens) and, in the ``bursty`` variant, bursts of long prompts (about 7k
tokens, 4 output tokens) arriving together at a fixed period; the ``quiet`` variant is the stream alone.
Every request is unique (no prefix reuse), so the comparison is about interference, not caching.

For each fleet and seed (a repeat): one ``pdserve up``; then ``quiet`` at time scale 1 and ``bursty`` at
each ``--scales`` value (a scale of 1.5 offers 1.5x the load: the timestamps run 1.5x faster), every run
with its own prompt seed so no run finds another's prompts cached. The trace is written in H100 time and
stretched by 1 / speedup, so the 2-core host keeps up. ``python -m bench.suites.disagg_report`` turns
the runs into tables (H100 time), goodput under the TTFT and TPOT SLOs, and plots.

    python -m bench.suites.disagg --out bench/results/disagg                   # the committed run
    python -m bench.suites.disagg --out /tmp/dvc --seeds 0 --fleets colocated --scales 1
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

from bench.suites.common import CpuSampler, bench, finish_run, git_state, load_index, log, put_run, serve_pdserve

FLEETS: dict[str, tuple[str, list[str]]] = {
    "disagg-8p8d": ("configs/sim-64.yaml", ["prefill.replicas=8", "decode.replicas=8"]),
    # This trace is prefill-heavy (~217k prompt tokens per H100 second at scale 1, ~7 H100s of prefill
    # at full use; ~80 sequences decoding): the split an operator would size for it.
    "disagg-12p4d": ("configs/sim-64.yaml", ["prefill.replicas=12", "decode.replicas=4"]),
    "colocated": ("configs/sim-64-colocated.yaml", ["decode.replicas=16"]),
}
TUNING_SEEDS = (0,)
REPORT_SEEDS = (101, 102, 103)


def make_trace(seed: int, bursts: bool, *, duration_s: float = 1.5, stream_rate: float = 60.0,
               stream_words: int = 500, stream_tokens: int = 128, burst_period_s: float = 0.5,
               burst_size: int = 8, burst_words: int = 2000, burst_tokens: int = 4) -> list[dict[str, object]]:
    """Trace lines in H100 seconds: Poisson(``stream_rate``) stream requests ``stream-i`` over
    ``duration_s``, plus (``bursts``) ``burst_size`` requests ``burst-k-j`` at every multiple of
    ``burst_period_s`` from ``burst_period_s / 2``. Pure: the same arguments give the same lines."""
    rng = random.Random(f"disagg-trace:{seed}")
    lines: list[tuple[float, dict[str, object]]] = []
    t, i = rng.expovariate(stream_rate), 0
    while t < duration_s:
        lines.append((t, {"id": f"stream-{i}", "prompt_words": stream_words, "max_tokens": stream_tokens}))
        t, i = t + rng.expovariate(stream_rate), i + 1
    if bursts:
        k, t = 0, burst_period_s / 2
        while t < duration_s:
            lines += [(t, {"id": f"burst-{k}-{j}", "prompt_words": burst_words, "max_tokens": burst_tokens})
                      for j in range(burst_size)]
            k, t = k + 1, t + burst_period_s
    lines.sort(key=lambda x: x[0])
    return [{"timestamp": ts, **body} for ts, body in lines]


def write_trace(path: Path, lines: list[dict[str, object]], dilation: float) -> int:
    """Write the trace with timestamps stretched to wall-clock seconds; returns the line count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({**line, "timestamp": round(float(str(line["timestamp"])) * dilation, 4)})
                            + "\n" for line in lines))
    return len(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/results/disagg")
    p.add_argument("--fleets", default=",".join(FLEETS))
    p.add_argument("--seeds", default=",".join(map(str, REPORT_SEEDS)))
    p.add_argument("--scales", default="0.5,1,1.5", help="load multipliers of the bursty trace")
    p.add_argument("--speedup", type=float, default=0.05, help="engine.args.speedup (0.05: 20x slower than H100)")
    p.add_argument("--slo-ttft-ms", type=float, default=1000.0, help="H100 time")
    p.add_argument("--slo-tpot-ms", type=float, default=20.0, help="H100 time")
    ns = p.parse_args()
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    dilation = 1.0 / ns.speedup
    index = load_index(out, {"speedup": ns.speedup, "tuning_seeds": list(TUNING_SEEDS),
                             "slo_h100_ms": {"ttft": ns.slo_ttft_ms, "tpot": ns.slo_tpot_ms},
                             "fleets": {f: {"config": FLEETS[f][0], "overrides": FLEETS[f][1]}
                                        for f in ns.fleets.split(",")}})
    runs = [("quiet", 1.0)] + [("bursty", float(s)) for s in ns.scales.split(",")]
    for seed in (int(s) for s in ns.seeds.split(",")):
        for fleet in ns.fleets.split(","):
            config, extra = FLEETS[fleet]
            overrides = [f"engine.args.speedup={ns.speedup}", *extra]
            with serve_pdserve(config, overrides) as server:
                for n, (variant, scale) in enumerate(runs):
                    run_dir = out / "runs" / f"seed{seed}" / fleet / f"{variant}-x{scale:g}"
                    shutil.rmtree(run_dir, ignore_errors=True)
                    trace = run_dir / "trace.jsonl"
                    count = write_trace(trace, make_trace(seed, variant == "bursty"), dilation)
                    argv = ["--target", f"{fleet}={server.url}", "--api", "completions", "--workload", "trace",
                            "--trace", str(trace), "--time-scale", f"{scale:g}", "--num-requests", str(count),
                            "--ignore-eos", "--seed", str(seed * 100 + n),
                            "--slo-ttft-ms", f"{ns.slo_ttft_ms * dilation:g}",
                            "--slo-tpot-ms", f"{ns.slo_tpot_ms * dilation:g}",
                            "--timeout", "600", "--duration", "600", "--total-duration", "1500",
                            "--no-plots", "--no-progress", "--out", str(run_dir)]
                    with CpuSampler(server.proc.pid) as cpu:
                        rc = bench(argv)
                    report = finish_run(run_dir, cpu)
                    log(f"seed {seed} {fleet} {variant} x{scale:g}: rc {rc}, host busy mean "
                        f"{report.host_busy_mean:.2f} p90 {report.host_busy_p90:.2f}")
                    put_run(out, index, ("seed", "fleet", "variant", "scale"), {
                        "seed": seed, "fleet": fleet, "variant": variant, "scale": scale,
                        "dir": str(run_dir.relative_to(out)), "rc": rc, "config": config, "overrides": overrides,
                        "argv": ["pdserve-bench", *argv], "host_busy_mean": report.host_busy_mean,
                        "host_busy_p90": report.host_busy_p90, "git": git_state(),
                        "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())})
    log(f"done: {out / 'runs.json'}")


if __name__ == "__main__":
    main()
