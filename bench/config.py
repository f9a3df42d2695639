"""Command line -> ``BenchConfig`` (frozen). Every bad argument is reported at once."""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from bench.api import API_KINDS, SamplingOptions
from bench.client import Target, normalize_url
from bench.load import SHAPES, ShapeOptions
from bench.metrics import GOODPUT_ATTAINMENT, Slo
from bench.record import LoadPoint
from bench.runner import RunLimits
from bench.workloads import WORKLOADS, WorkloadParams

# Which flag carries the swept values of each load shape.
SWEEP_FLAGS = {"closed": "concurrency", "poisson": "rate", "burst": "burst_size", "trace": "time_scale"}


EXAMPLES = """examples:
  single target, closed loop at concurrency 8:
    pdserve-bench --target pd=http://127.0.0.1:8000 --workload chat --num-requests 200 --concurrency 8
  two targets compared on one workload (ratios vs the first):
    pdserve-bench --target pd=http://127.0.0.1:8000 --target vllm=http://127.0.0.1:8100 \\
      --workload docqa --num-requests 200 --concurrency 1,4,16
  Poisson rate sweep with SLO goodput (DistServe):
    pdserve-bench --target pd=http://127.0.0.1:8000 --workload mix --num-requests 300 \\
      --rate 1,2,4,8 --slo-ttft-ms 500 --slo-tpot-ms 50
  trace replay at twice its speed:
    pdserve-bench --target pd=http://127.0.0.1:8000 --workload trace \\
      --trace bench/workloads/traces/sample.jsonl --load trace --time-scale 2

files written to --out: records.json, records.csv, summary.json, summary.csv,
ttft_cdf.png, tpot_cdf.png, latency_vs_load.png (sweeps)
"""


@dataclass(frozen=True)
class BenchConfig:
    targets: tuple[Target, ...]
    model: str | None
    api: str
    workload: str
    params: WorkloadParams
    seed: int
    points: tuple[LoadPoint, ...]
    shape_options: ShapeOptions
    repeats: int
    limits: RunLimits
    total_duration_s: float
    sampling: SamplingOptions
    slo: Slo
    goodput_attainment: float
    out_dir: str
    plots: bool = True
    progress: bool = True
    argv: tuple[str, ...] = field(default_factory=tuple)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pdserve-bench",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
        description="Benchmark OpenAI-compatible streaming endpoints: TTFT, TPOT, ITL, throughput, "
        "prefix-cache hit rate, routing headers and SLO goodput.",
    )
    g = p.add_argument_group("targets")
    g.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="server root (with or without /v1); repeat to compare; ratios are vs the first",
    )
    g.add_argument("--model", help="model id (default: each target's first from GET /v1/models)")
    g.add_argument("--api", choices=sorted(API_KINDS), default="chat", help="endpoint (default: chat)")
    g.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="bearer token ($OPENAI_API_KEY)")
    add_workload_args(p)
    g = p.add_argument_group("load (one swept flag; --load is inferred from it)")
    g.add_argument("--load", choices=sorted(SHAPES), help="load shape")
    g.add_argument("--concurrency", help="closed loop: comma list of concurrencies, e.g. 1,4,16")
    g.add_argument("--rate", help="open loop Poisson: comma list of requests/s (inf allowed)")
    g.add_argument("--burst-size", help="bursts: comma list of requests per burst")
    g.add_argument("--burst-period", type=float, default=1.0, help="seconds between bursts")
    g.add_argument("--time-scale", help="trace replay: comma list of speed-up factors (default 1)")
    g.add_argument("--repeats", type=int, default=1, help="repeat the whole sweep (targets keep alternating)")
    g.add_argument("--max-inflight", type=int, default=1024, help="open-loop cap on requests in flight")
    g = p.add_argument_group("bounds")
    g.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    g.add_argument("--duration", type=float, default=600.0, help="max seconds of sending per run")
    g.add_argument("--total-duration", type=float, default=3600.0, help="max seconds for all runs")
    g = p.add_argument_group("sampling")
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--ignore-eos", action="store_true", help="ask for exactly max-tokens tokens (vLLM)")
    g.add_argument("--extra-body", help="JSON object merged into every request body")
    g = p.add_argument_group("SLOs and output")
    g.add_argument("--slo-ttft-ms", type=float)
    g.add_argument("--slo-tpot-ms", type=float)
    g.add_argument(
        "--goodput-attainment",
        type=float,
        default=GOODPUT_ATTAINMENT,
        help="SLO attainment a rate must reach to count for goodput (DistServe: 0.9)",
    )
    g.add_argument("--out", help="output folder (default: bench/results/tmp/bench-<UTC time>)")
    g.add_argument("--no-plots", action="store_true")
    g.add_argument("--no-progress", action="store_true")
    return p


def add_workload_args(p: argparse.ArgumentParser, num_requests: int | None = 100,
                      num_requests_help: str = "requests per run") -> None:
    """The workload flags (shared with ``pdserve plan``, so one set of flags names the same requests)."""
    g = p.add_argument_group("workload")
    g.add_argument("--workload", choices=sorted(WORKLOADS), default="chat")
    g.add_argument("--num-requests", type=int, default=num_requests, help=num_requests_help)
    g.add_argument("--max-tokens", type=int, default=128)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--sessions", type=int, help="chat sessions (default: num-requests / turns)")
    g.add_argument("--turns", type=int, default=4)
    g.add_argument("--system-words", type=int, default=512)
    g.add_argument("--user-words", type=int, default=64)
    g.add_argument("--answer-words", type=int, default=64, help="synthetic assistant reply kept in the history")
    g.add_argument("--num-docs", type=int, default=8)
    g.add_argument("--doc-words", type=int, default=2000)
    g.add_argument("--question-words", type=int, default=24)
    g.add_argument("--zipf-s", type=float, default=1.1, help="Zipf exponent of document popularity")
    g.add_argument("--prompt-words", type=int, default=256, help="unique workload prompt size")
    g.add_argument("--mix", default="chat=0.4,docqa=0.4,unique=0.2", help="NAME=WEIGHT,... for --workload mix")
    g.add_argument("--trace", help="JSONL trace file for --workload trace (schema: bench/workloads/README.md)")


def workload_params(ns: argparse.Namespace, mix: tuple[tuple[str, float], ...], num_requests: int) -> WorkloadParams:
    """``WorkloadParams`` from the flags of ``add_workload_args``; ``ValueError`` if they are invalid."""
    return WorkloadParams(
        num_requests=num_requests,
        max_tokens=ns.max_tokens,
        sessions=ns.sessions,
        turns=ns.turns,
        system_words=ns.system_words,
        user_words=ns.user_words,
        answer_words=ns.answer_words,
        num_docs=ns.num_docs,
        doc_words=ns.doc_words,
        question_words=ns.question_words,
        zipf_s=ns.zipf_s,
        prompt_words=ns.prompt_words,
        mix=mix,
        trace_path=ns.trace,
    )


def parse_target(text: str, index: int) -> Target:
    """``NAME=URL`` or a bare URL (named after its host:port)."""
    name, sep, url = text.partition("=")
    if not sep or name.startswith(("http://", "https://")):
        name, url = "", text
    url = normalize_url(url)
    return Target(name=name or urlparse(url).netloc or f"target{index}", url=url)


def parse_values(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--{what}: expected a comma list of numbers, got {text!r}") from None
    if not values or any(not (v > 0) or math.isnan(v) for v in values):
        raise ValueError(f"--{what}: values must be > 0, got {text!r}")
    if list(values) != sorted(set(values)):
        raise ValueError(f"--{what}: values must be increasing and distinct, got {text!r}")
    return values


def parse_mix(text: str) -> tuple[tuple[str, float], ...]:
    parts = []
    for item in text.split(","):
        name, sep, weight = item.partition("=")
        if not sep:
            raise ValueError(f"--mix: expected NAME=WEIGHT, got {item!r}")
        parts.append((name.strip(), float(weight)))
    return tuple(parts)


def _option(kind: str) -> str:
    """The command-line option that sweeps the ``kind`` load shape (``--burst-size`` for ``burst``)."""
    return "--" + SWEEP_FLAGS[kind].replace("_", "-")


def _load_points(ns: argparse.Namespace) -> tuple[LoadPoint, ...]:
    given = [kind for kind, flag in SWEEP_FLAGS.items() if getattr(ns, flag) is not None]
    kind = ns.load or (given[0] if len(given) == 1 else "closed")
    if ns.load is None and len(given) > 1:
        raise ValueError(f"give one swept flag, got {', '.join(_option(k) for k in given)}")
    if any(k != kind for k in given):
        raise ValueError(f"--load {kind} does not use {_option(given[0])}")
    flag = SWEEP_FLAGS[kind]
    text = getattr(ns, flag) or "1"
    return tuple(LoadPoint(kind, v) for v in parse_values(text, flag.replace("_", "-")))


def from_args(ns: argparse.Namespace) -> BenchConfig:
    """Build the config; raises ``ValueError`` listing every problem found."""
    errors: list[str] = []

    def attempt(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except ValueError as e:
            errors.append(str(e))
            return None

    targets = [attempt(parse_target, t, i) for i, t in enumerate(ns.target)]
    if not ns.target:
        errors.append("at least one --target NAME=URL is required")
    for flag in ("num_requests", "max_tokens", "repeats", "max_inflight", "turns"):
        if getattr(ns, flag) < 1:
            errors.append(f"--{flag.replace('_', '-')} must be >= 1")
    for flag in ("timeout", "duration", "total_duration"):
        if not getattr(ns, flag) > 0:
            errors.append(f"--{flag.replace('_', '-')} must be > 0")
    if ns.workload == "trace" and not ns.trace:
        errors.append("--workload trace needs --trace PATH")
    extra = attempt(lambda: json.loads(ns.extra_body) if ns.extra_body else {})
    if extra is not None and not isinstance(extra, dict):
        errors.append("--extra-body must be a JSON object")
    points = attempt(_load_points, ns)
    mix = attempt(parse_mix, ns.mix)
    params = attempt(workload_params, ns, mix or (), ns.num_requests)
    if errors:
        raise ValueError("; ".join(errors))
    return BenchConfig(
        targets=tuple(Target(t.name, t.url, ns.api_key) for t in targets),
        model=ns.model,
        api=ns.api,
        workload=ns.workload,
        params=params,
        seed=ns.seed,
        points=points,
        shape_options=ShapeOptions(burst_period_s=ns.burst_period),
        repeats=ns.repeats,
        limits=RunLimits(max_duration_s=ns.duration, timeout_s=ns.timeout, max_inflight=ns.max_inflight),
        total_duration_s=ns.total_duration,
        sampling=SamplingOptions(ns.temperature, ns.ignore_eos, tuple(sorted((extra or {}).items()))),
        slo=Slo(
            ttft_s=None if ns.slo_ttft_ms is None else ns.slo_ttft_ms / 1000,
            tpot_s=None if ns.slo_tpot_ms is None else ns.slo_tpot_ms / 1000,
        ),
        goodput_attainment=ns.goodput_attainment,
        out_dir=ns.out or time.strftime("bench/results/tmp/bench-%Y%m%d-%H%M%S", time.gmtime()),
        plots=not ns.no_plots,
        progress=not ns.no_progress,
    )
