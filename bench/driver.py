"""Runs a ``BenchConfig``'s plan against its targets: the only module that opens connections.

One ``httpx.AsyncClient`` serves the whole plan; it ignores proxy settings from the environment
(``trust_env=False``) so requests go only to the target URLs given. Runs execute one at a time in the
order of ``bench.plan``; the total time budget skips the runs that no longer fit.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace

import httpx

from bench import workloads
from bench.api import api_kind
from bench.client import Target, list_models, send
from bench.config import BenchConfig
from bench.load import make_shape
from bench.plan import plan_runs
from bench.record import RequestRecord, RunResult
from bench.runner import run
from bench.spec import RequestSpec


@dataclass(frozen=True)
class Outcome:
    results: tuple[RunResult, ...]
    models: tuple[tuple[str, str], ...]  # (target name, model id)
    skipped: int  # planned runs left out by the total time budget


def _log(msg: str) -> None:
    print(f"[pdserve-bench] {msg}", file=sys.stderr, flush=True)


async def resolve_models(client: httpx.AsyncClient, config: BenchConfig) -> dict[str, str]:
    """``--model`` for every target, or each target's first listed model. Raises ``RuntimeError``."""
    if config.model:
        return {t.name: config.model for t in config.targets}
    models: dict[str, str] = {}
    for t in config.targets:
        try:
            listed = await list_models(client, t, timeout=min(config.limits.timeout_s, 30.0))
        except (httpx.HTTPError, ValueError, KeyError) as e:
            raise RuntimeError(f"{t.name}: cannot list models at {t.url}/v1/models ({e}); pass --model") from e
        if not listed:
            raise RuntimeError(f"{t.name}: /v1/models lists no model; pass --model")
        models[t.name] = listed[0]
    return models


async def execute(config: BenchConfig) -> Outcome:
    api = api_kind(config.api)
    shape = make_shape(config.points[0].kind, config.shape_options)
    targets = {t.name: t for t in config.targets}
    plan = plan_runs(list(targets), config.points, config.repeats, config.seed)
    width = max([config.limits.max_inflight, *(shape.concurrency(p.value) or 0 for p in config.points)])
    limits = httpx.Limits(max_connections=width, max_keepalive_connections=width)
    timeout = httpx.Timeout(config.limits.timeout_s, connect=min(10.0, config.limits.timeout_s))
    results: list[RunResult] = []
    began = time.monotonic()
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
        models = await resolve_models(client, config)
        for i, planned in enumerate(plan):
            left = config.total_duration_s - (time.monotonic() - began)
            if left <= 0:
                _log(f"--total-duration reached: skipping the last {len(plan) - i} run(s)")
                return Outcome(tuple(results), tuple(models.items()), len(plan) - i)
            specs = workloads.generate(config.workload, config.params, planned.seed)
            specs = shape.arrivals(specs, planned.key.load.value, planned.seed)
            target, model = targets[planned.key.target], models[planned.key.target]

            async def send_one(
                spec: RequestSpec, start: float, target: Target = target, model: str = model
            ) -> RequestRecord:
                return await send(
                    client, target, api, spec, model, config.sampling, timeout=config.limits.timeout_s, run_start=start
                )

            # The run gets what is left of the total budget (its grace period for in-flight requests included).
            max_duration_s = max(0.0, min(config.limits.max_duration_s, left - config.limits.timeout_s))
            result = await run(
                planned.key,
                specs,
                send_one,
                concurrency=shape.concurrency(planned.key.load.value),
                limits=replace(config.limits, max_duration_s=max_duration_s),
                progress=config.progress,
            )
            if len(result.records) < result.planned:
                _log(
                    f"{planned.key.target} {planned.key.load.label}: time limit sent "
                    f"{len(result.records)}/{result.planned} requests"
                )
            results.append(result)
    return Outcome(tuple(results), tuple(models.items()), 0)
