"""Goodput, the way ``bench.metrics`` defines it after DistServe: the highest request rate at which at
least 90% of the requests meet both the TTFT and the TPOT SLO (a request that fails or never finishes is
a miss). ``bisect_rate`` finds it for one split: step from a start rate until the pass/fail boundary is
bracketed, then bisect the bracket geometrically until its ends are within ``rel_tol`` of each other;
the goodput is the highest rate that passed. Every rate replays the same seeded workload for its run
length with the same unit-rate arrival draws scaled by 1/rate, so attainment falls with the rate
without per-rate sampling noise. (Attainment need not be monotone in the rate, e.g. when a
prefix-affine router piles light traffic onto one worker; the search then reports the boundary it
finds from its start rate.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RateSearch:
    """``goodput``: highest passing rate found (0.0: none); ``probes``: (rate, passed) in the order tried."""

    goodput: float
    probes: tuple[tuple[float, bool], ...]


def bisect_rate(passes: Callable[[float], bool], start: float, *, rel_tol: float = 0.05, first_step: float = 2.0,
                min_rate: float = 1e-3, max_rate: float = 1e6) -> RateSearch:
    """Bracket then bisect the highest passing rate; ``passes`` is assumed to go from True to False once as
    the rate grows. Bracketing moves from ``start`` by ``first_step``, then by the square of the last step
    (at most x2), so a good ``start`` with a small ``first_step`` costs few probes. Stops at ``max_rate``
    (returned as the goodput if it passes) and ``min_rate`` (goodput 0 if it fails)."""
    if not (start > 0 and rel_tol > 0 and first_step > 1 and 0 < min_rate <= max_rate):
        raise ValueError("need start > 0, rel_tol > 0, first_step > 1 and 0 < min_rate <= max_rate")
    probes: list[tuple[float, bool]] = []

    def test(rate: float) -> bool:
        ok = passes(rate)
        probes.append((rate, ok))
        return ok

    rate, step = min(max(start, min_rate), max_rate), first_step
    lo: float | None = rate if test(rate) else None
    hi: float | None = None if lo is not None else rate
    while lo is None or hi is None:  # step down until one passes, or up until one fails
        if lo is None:
            assert hi is not None
            if hi <= min_rate:
                return RateSearch(0.0, tuple(probes))
            rate = max(hi / step, min_rate)
        else:
            if lo >= max_rate:
                return RateSearch(lo, tuple(probes))
            rate = min(lo * step, max_rate)
        step = max(step, min(step * step, 2.0))
        if test(rate):
            lo = rate
        else:
            hi = rate
    while hi / lo > 1 + rel_tol:
        mid = math.sqrt(lo * hi)
        if test(mid):
            lo = mid
        else:
            hi = mid
    return RateSearch(lo, tuple(probes))


@dataclass(frozen=True)
class RunLength:
    """Requests in a run at a given rate: ``duration_s`` seconds of arrivals (at least ``min_requests``),
    rounded up to a power of 2**(1/4) so that nearby rates replay one workload; or ``fixed`` requests.

    Runs are sized by duration because a short run hides overload: a rate above capacity makes queues
    grow, and misses pile up only after a while (about the TTFT SLO's slack x capacity / excess rate), so
    with too few requests every burst looks served. The goodput measured with D seconds of arrivals is
    high by roughly (TTFT SLO - unloaded TTFT) / (0.9 D), e.g. ~5% for 0.5 s and D = 8 s."""

    duration_s: float = 8.0
    min_requests: int = 200
    fixed: int | None = None

    def requests_at(self, rate: float) -> int:
        if self.fixed is not None:
            return self.fixed
        n = max(self.min_requests, math.ceil(rate * self.duration_s))
        return math.ceil(2 ** (math.ceil(4 * math.log2(n) - 1e-9) / 4))
