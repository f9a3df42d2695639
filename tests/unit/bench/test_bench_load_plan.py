"""Load shapes (bench.load) and run ordering (bench.plan)."""

from __future__ import annotations

import math

import pytest

from bench.load import ShapeOptions, make_shape
from bench.plan import plan_runs, run_seed
from bench.record import LoadPoint
from bench.spec import RequestSpec

SPECS = [RequestSpec(f"r{i}", 4, prompt="p", arrival_s=float(i) * 0.5) for i in range(2000)]


def offsets(specs: list[RequestSpec]) -> list[float]:
    return [s.arrival_s if s.arrival_s is not None else math.nan for s in specs]


def test_poisson_is_seeded_starts_at_zero_and_has_the_asked_rate() -> None:
    shape = make_shape("poisson")
    a, b, c = (shape.arrivals(SPECS, 4.0, seed) for seed in (1, 1, 2))
    assert offsets(a) == offsets(b) != offsets(c)
    ts = offsets(a)
    assert ts[0] == 0.0 and ts == sorted(ts)
    assert (len(ts) - 1) / ts[-1] == pytest.approx(4.0, rel=0.1)
    assert set(offsets(shape.arrivals(SPECS[:5], math.inf, 0))) == {0.0}
    assert shape.concurrency(4.0) is None
    with pytest.raises(ValueError):
        shape.arrivals(SPECS, 0.0, 0)


def test_bursts_arrive_together_every_period() -> None:
    shape = make_shape("burst", ShapeOptions(burst_period_s=2.5))
    assert offsets(shape.arrivals(SPECS[:7], 3, 0)) == [0.0, 0.0, 0.0, 2.5, 2.5, 2.5, 5.0]


def test_closed_loop_has_concurrency_and_no_arrivals() -> None:
    shape = make_shape("closed")
    assert shape.concurrency(8) == 8
    assert all(s.arrival_s is None for s in shape.arrivals(SPECS[:3], 8, 0))


def test_trace_time_is_scaled_and_rebased() -> None:
    shape = make_shape("trace")
    shifted = [s.with_arrival(10.0 + (s.arrival_s or 0.0)) for s in SPECS[:3]]
    assert offsets(shape.arrivals(shifted, 2.0, 0)) == [0.0, 0.25, 0.5]
    with pytest.raises(ValueError, match="timestamps"):
        shape.arrivals([s.with_arrival(None) for s in SPECS[:2]], 1.0, 0)


def test_unknown_shape() -> None:
    with pytest.raises(ValueError, match="unknown load shape"):
        make_shape("sine")


def test_plan_alternates_targets_and_shares_seeds_within_a_point() -> None:
    points = [LoadPoint("poisson", 1.0), LoadPoint("poisson", 2.0), LoadPoint("poisson", 4.0)]
    runs = plan_runs(["a", "b"], points, repeats=2, seed=5)
    assert len(runs) == 12
    order = [(r.key.target, r.key.load.value, r.key.repeat) for r in runs]
    assert order[:6] == [("a", 1.0, 0), ("b", 1.0, 0), ("b", 2.0, 0), ("a", 2.0, 0), ("a", 4.0, 0), ("b", 4.0, 0)]
    assert order[6:8] == [("b", 1.0, 1), ("a", 1.0, 1)]
    by_point: dict[tuple[float, int], set[int]] = {}
    for r in runs:
        by_point.setdefault((r.key.load.value, r.key.repeat), set()).add(r.seed)
    assert all(len(seeds) == 1 for seeds in by_point.values())  # same requests for every target
    assert len({next(iter(s)) for s in by_point.values()}) == 6  # fresh requests per point and repeat
    assert runs[0].seed == 5 == run_seed(5, 0, 0)


def test_plan_rejects_duplicates_and_empty() -> None:
    with pytest.raises(ValueError):
        plan_runs(["a", "a"], [LoadPoint("closed", 1)], 1, 0)
    with pytest.raises(ValueError):
        plan_runs([], [LoadPoint("closed", 1)], 1, 0)
