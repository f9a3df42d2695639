"""Suite paired: real-vLLM targets up side by side, every prompt sent to each of them in turn.

Why: on this shared 2-core host one server's TPOT moves ±20% from request to request and from start
to start, more than the 5-15% effects in question (issue 7's TPOT gap). ``cpu_vllm`` runs its targets
one after another, so drift lands on their ratio. Here all targets are started first and stay up;
each pair is one fresh prompt (unique, so no prefix is cached) sent to every target one after
another, in an order that rotates from pair to pair, and each target's TTFT and TPOT are divided by
the baseline's on the same prompt within the same minute. The report gives the median ratio, its
range, the median's 95% interval and how many pairs were above 1.

Targets are ``bench.suites.cpu_vllm.TARGETS`` (one pdserve target at most: each starts an embedded
Ray). Before each request the suite idles ``--settle-s`` so that a server's post-request polling
(vLLM's message queue spins about 1 s after its last read) does not land on the next target's
request. One warm-up request per target is sent first and not counted.

    python -m bench.suites.paired --out bench/results/paired \\
        --targets pdserve,vllm-strict-core1-nixl,vllm-strict-core1 --baseline vllm-strict-core1 --pairs 12
    python -m bench.suites.paired --out bench/results/paired --report-only
    python -m bench.suites.paired --out bench/results/paired \\
        --pool bench/results/paired/r1,bench/results/paired/r2,bench/results/paired/r3

Writes ``OUT/records.json`` (every request: pair, position, target, the client's record),
``OUT/runs.json`` (machine, commit, argv), ``OUT/results.json``, ``OUT/results.md`` and
``OUT/tpot_ratio.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import httpx

from bench.api import SamplingOptions, api_kind
from bench.client import Target as ClientTarget
from bench.client import send
from bench.record import RequestRecord
from bench.spec import RequestSpec
from bench.suites.common import git_state, log, machine, write_json
from bench.suites.cpu_vllm import MODEL_NAME, TARGETS
from bench.suites.paired_report import PairedRecord, markdown, plot_ratios, summarize
from bench.workloads import WorkloadParams, generate

API = api_kind("completions")
OPTIONS = SamplingOptions(temperature=0.0, ignore_eos=True)
TIMEOUT_S = 300.0


def rotation(targets: list[str], pair: int) -> list[str]:
    """The order of pair ``pair``: the targets rotated by ``pair``, so each leads equally often."""
    k = pair % len(targets)
    return targets[k:] + targets[:k]


def one_request(url: str, spec: RequestSpec) -> RequestRecord:
    """Send ``spec`` to the server at ``url`` and stream the answer (bounded by ``TIMEOUT_S``)."""
    async def go() -> RequestRecord:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            return await send(client, ClientTarget("t", url), API, spec, MODEL_NAME, OPTIONS,
                              timeout=TIMEOUT_S, run_start=time.perf_counter())
    return asyncio.run(go())


def run(out: Path, targets: list[str], pairs: int, prompt_words: int, max_tokens: int, settle_s: float,
        seed: int) -> None:
    """Start every target, send ``pairs`` prompts to each in rotating order, write records as they come."""
    params = WorkloadParams(num_requests=pairs + 1, max_tokens=max_tokens, prompt_words=prompt_words)
    warmup, *specs = generate("unique", params, seed)
    write_json(out / "runs.json", {"machine": machine(), **git_state(), "argv": sys.argv, "targets": targets,
                                   "pairs": pairs, "prompt_words": prompt_words, "max_tokens": max_tokens,
                                   "settle_s": settle_s, "seed": seed})
    rows: list[PairedRecord] = []
    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(TARGETS[name]()).url for name in targets}
        for name in targets:
            time.sleep(settle_s)
            log(f"warm-up {name}: {'ok' if one_request(urls[name], warmup).ok else 'failed'}")
        for pair, spec in enumerate(specs):
            for position, name in enumerate(rotation(targets, pair)):
                time.sleep(settle_s)
                record = one_request(urls[name], spec)
                rows.append(PairedRecord(pair, position, name, record))
                log(f"pair {pair} {name}: ok={record.ok} ttft={record.chunk_times_s[:1]} e2e={record.e2e_s}")
            write_json(out / "records.json", [asdict(r) for r in rows])


def load_records(run_dir: Path, pair_offset: int = 0) -> list[PairedRecord]:
    """A run's records, its pair numbers shifted by ``pair_offset`` (to pool runs without mixing pairs)."""
    raw = json.loads((run_dir / "records.json").read_text())
    return [PairedRecord(r["pair"] + pair_offset, r["position"], r["target"],
                         RequestRecord(**{**r["record"], "chunk_times_s": tuple(r["record"]["chunk_times_s"])}))
            for r in raw]


def report(out: Path, targets: list[str], baseline: str, runs: list[Path] | None = None) -> None:
    """Results of the run in ``out``, or of ``runs`` pooled (pair by pair, each pair within its run)."""
    records = [r for i, run_dir in enumerate(runs or [out]) for r in load_records(run_dir, 10_000 * i)]
    rows = summarize(records, targets, baseline)
    write_json(out / "results.json", {"baseline": baseline, "targets": rows})
    (out / "results.md").write_text(markdown(rows, baseline))
    plot_ratios(out / "tpot_ratio.png", rows, baseline)
    print(markdown(rows, baseline))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/results/paired")
    p.add_argument("--targets", default="pdserve,vllm-strict-core1-nixl,vllm-strict-core1")
    p.add_argument("--baseline", default="vllm-strict-core1")
    p.add_argument("--pairs", type=int, default=12, help="prompts, each sent to every target")
    p.add_argument("--prompt-words", type=int, default=600, help="600 words: about 1,900 prompt tokens")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--settle-s", type=float, default=2.0, help="idle before each request")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--pool", default="", help="comma-separated run folders: report them pooled into --out")
    ns = p.parse_args()
    out, targets = Path(ns.out), ns.targets.split(",")
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or ns.baseline not in targets:
        p.error(f"unknown targets {unknown} or baseline {ns.baseline!r} not among {targets}; known: {list(TARGETS)}")
    pooled = [Path(d) for d in ns.pool.split(",") if d]
    if not ns.report_only and not pooled:
        out.mkdir(parents=True, exist_ok=True)
        run(out, targets, ns.pairs, ns.prompt_words, ns.max_tokens, ns.settle_s, ns.seed)
    report(out, targets, ns.baseline, pooled or None)


if __name__ == "__main__":
    main()
