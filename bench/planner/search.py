"""The planner's search: each split's goodput and latencies, the splits to try, the recommendation.

Each split is searched independently (``search_split``): one full run at every asked-for rate (their p99
latencies and SLO attainment), then ``goodput.bisect_rate`` from a start rate, reusing those runs as
probes. A probe run stops as soon as more than 10% of its requests are known to miss. Results depend only
on the inputs, never on the order or the process in which splits run (``map_splits`` may fork ``jobs``
processes).
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from bench.metrics import GOODPUT_ATTAINMENT, Slo, Stats, attainment, tpot, ttft
from protocol.sim_profile import SimProfile

from .fleet import FleetRun, simulate
from .goodput import RunLength, bisect_rate
from .spec import FleetPolicy, Split, all_splits, grid_prefill_counts, refine_prefill_counts, scale_split
from .tokens import WorkloadSource


@dataclass(frozen=True)
class PlanInputs:
    """Everything one split's search needs. ``rates``: rates to report p99 latencies at (the first is
    also where a search without a hint starts)."""

    source: WorkloadSource
    profile: SimProfile
    policy: FleetPolicy
    slo: Slo
    rates: tuple[float, ...]
    length: RunLength = field(default_factory=RunLength)
    rel_tol: float = 0.05
    threshold: float = GOODPUT_ATTAINMENT
    chain_turns: bool = False

    def miss_budget(self, n: int) -> int:
        """Misses a run of ``n`` requests may have and pass: attainment >= threshold <=> misses <= this."""
        return math.floor((1 - self.threshold) * n + 1e-9)


@dataclass(frozen=True)
class AtRate:
    """One split at one asked-for rate (latencies in seconds, of the successful requests)."""

    rate: float
    attainment: float
    ttft: Stats
    tpot: Stats


@dataclass(frozen=True)
class SplitResult:
    split: Split
    goodput: float
    at_rates: tuple[AtRate, ...]
    probes: tuple[tuple[float, bool], ...]
    runs: int
    steps: int
    seconds: float = field(compare=False)  # wall time of the search (not deterministic)


def run_at(inputs: PlanInputs, split: Split, rate: float, *, stop_early: bool) -> FleetRun:
    """One run of ``split`` at ``rate``; with ``stop_early`` it ends once the rate is known to fail."""
    requests, unit = inputs.source.get(inputs.length.requests_at(rate))
    return simulate(requests, [u / rate for u in unit], split, inputs.profile, inputs.policy, slo=inputs.slo,
                    miss_budget=inputs.miss_budget(len(requests)) if stop_early else None,
                    chain_turns=inputs.chain_turns)


def search_split(inputs: PlanInputs, split: Split, hint: float | None = None) -> SplitResult:
    """The split's runs at every asked-for rate, and its goodput (reusing those runs as probes). The
    search starts at ``hint`` (a neighbouring split's goodput) in steps of 1.25, else at the first
    asked-for rate in steps of 2."""
    t0 = time.perf_counter()
    known: dict[float, bool] = {}
    at_rates = []
    runs = steps = 0
    for rate in inputs.rates:
        run = run_at(inputs, split, rate, stop_early=False)
        att = attainment(run.records, inputs.slo) or 0.0
        ok = [r for r in run.records if r.ok]
        at_rates.append(AtRate(rate, att, Stats.of(t for r in ok if (t := ttft(r)) is not None),
                               Stats.of(t for r in ok if (t := tpot(r)) is not None)))
        known[rate] = att >= inputs.threshold
        runs, steps = runs + 1, steps + run.steps

    def passes(rate: float) -> bool:
        nonlocal runs, steps
        if rate not in known:
            run = run_at(inputs, split, rate, stop_early=True)
            runs, steps = runs + 1, steps + run.steps
            known[rate] = not run.stopped_early and (attainment(run.records, inputs.slo) or 0.0) >= inputs.threshold
        return known[rate]

    start, step = (hint, 1.25) if hint else (inputs.rates[0], 2.0)
    found = bisect_rate(passes, start, rel_tol=inputs.rel_tol, first_step=step)
    return SplitResult(split, found.goodput, tuple(at_rates), found.probes, runs, steps, time.perf_counter() - t0)


def recommend(results: Sequence[SplitResult]) -> SplitResult:
    """The highest goodput; ties go to the better attainment at the highest asked-for rate, then to the
    lower TTFT p99 there, then to the first in ``results``."""
    if not results:
        raise ValueError("no split was searched")

    def key(r: SplitResult) -> tuple[float, float, float]:
        last = r.at_rates[-1] if r.at_rates else None
        p99 = last.ttft.p99 if last is not None and last.ttft.p99 is not None else math.inf
        return (r.goodput, last.attainment if last is not None else 0.0, -p99)

    return max(results, key=key)  # the first of equals


# --------------------------------------------------------------------------- a whole plan
@dataclass(frozen=True)
class Plan:
    """The splits searched (disaggregated by prefill count, colocated last) on ``workers`` simulated
    workers, and the recommended one. ``scale``: fleet workers per simulated worker (1.0 when the fleet
    itself was simulated); the fleet has ``fleet_workers``, its rates and goodputs are ``scale`` x those
    simulated (see ``model_size``)."""

    workers: int
    results: tuple[SplitResult, ...]
    recommended: SplitResult
    scale: float = 1.0
    fleet_workers: int = 0

    def fleet_split(self, split: Split) -> Split:
        """The fleet's split that ``split`` of the simulated workers stands for."""
        return scale_split(split, self.workers, self.fleet_workers or self.workers)


_SHARED: PlanInputs | None = None  # the inputs forked worker processes read (set only around a fork)


def _search_shared(task: tuple[Split, float | None]) -> SplitResult:
    assert _SHARED is not None, "worker process started without the plan's inputs"
    return search_split(_SHARED, *task)


def map_splits(inputs: PlanInputs, tasks: Sequence[tuple[Split, float | None]], jobs: int = 1,
               on_result: Callable[[SplitResult], None] | None = None) -> list[SplitResult]:
    """``search_split`` over ``(split, hint)`` tasks, in ``jobs`` forked processes when > 1 (they inherit
    ``inputs`` rather than receive a pickled copy); results in task order, the same for any ``jobs``."""
    global _SHARED
    if jobs <= 1 or len(tasks) <= 1:
        return [_tell(search_split(inputs, *task), on_result) for task in tasks]
    _SHARED = inputs
    try:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            return [_tell(r, on_result) for r in pool.map(_search_shared, tasks)]
    finally:
        _SHARED = None


def _tell(result: SplitResult, on_result: Callable[[SplitResult], None] | None) -> SplitResult:
    if on_result is not None:
        on_result(result)
    return result


def plan_splits(inputs: PlanInputs, workers: int, *, mode: str = "auto", grid: int = 16, colocated: bool = True,
                counts: Sequence[int] = (), jobs: int = 1,
                on_result: Callable[[SplitResult], None] | None = None) -> Plan:
    """Search the splits of ``workers`` and recommend one. ``counts``: exactly these prefill counts (0:
    colocated), each from the first asked-for rate. Else ``mode``: ``all`` searches every split, and
    ``auto`` does so up to ``grid + 1`` workers; beyond, it searches ``grid`` prefill counts spread over
    1..workers-1 and colocated, then every count between the best one's grid neighbours. Either way in two
    passes: the second pass's splits start from the goodput of their nearest first-pass splits."""
    if mode not in ("all", "auto"):
        raise ValueError(f"unknown split mode {mode!r} (all, auto)")
    if counts:
        if any(not 0 <= c < workers for c in counts):
            raise ValueError(f"prefill counts must be in 0..{workers - 1} (0: colocated), got {list(counts)}")
        results = map_splits(inputs, [(Split(c, workers - c), None) for c in sorted(set(counts))], jobs, on_result)
        return _plan(workers, results)
    every = mode == "all" or workers - 1 <= grid
    splits = all_splits(workers, colocated)
    first_counts = [s.prefill for s in splits if s.prefill % 2] if every else grid_prefill_counts(workers, grid)
    first = [s for s in splits if s.colocated or s.prefill in first_counts]
    results = map_splits(inputs, [(s, None) for s in first], jobs, on_result)
    by_count = {r.split.prefill: r.goodput for r in results if not r.split.colocated}
    if every:
        more = [s.prefill for s in splits if s not in first]
    else:
        best = max(by_count, key=lambda p: (by_count[p], -p))
        more = refine_prefill_counts(best, first_counts, workers)
    tasks = [(Split(p, workers - p), _hint(by_count, p)) for p in more]
    return _plan(workers, results + map_splits(inputs, tasks, jobs, on_result))


def _hint(goodput_by_count: dict[int, float], p: int) -> float | None:
    """Geometric mean of the goodputs of the nearest searched counts below and above ``p`` (either alone
    at an end); None when they are 0."""
    below = [c for c in goodput_by_count if c < p]
    above = [c for c in goodput_by_count if c > p]
    near = [goodput_by_count[max(below)]] if below else []
    near += [goodput_by_count[min(above)]] if above else []
    if not near or min(near) <= 0:
        return None
    return math.prod(near) ** (1 / len(near))


def _plan(workers: int, results: list[SplitResult]) -> Plan:
    results.sort(key=lambda r: (r.split.colocated, r.split.prefill))
    return Plan(workers, tuple(results), recommend(results))
