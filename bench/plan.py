"""Which runs happen, in which order, with which workload seed (pure).

With several targets, every load point is run once per target back to back, and the order of the
targets rotates from one point (and repeat) to the next: A B, B A, A B, ... Slow drifts of the host
(other tenants, thermal, caches of the machine) then fall on every target alike instead of on
whichever ran last. All targets of one (point, repeat) get the same workload seed, hence the same
requests; different points and repeats get different seeds, so a server's prefix cache warmed by one
run does not flatter the next. Point 0 of repeat 0 uses ``seed`` itself.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from bench.record import LoadPoint, RunKey


@dataclass(frozen=True)
class PlannedRun:
    key: RunKey
    seed: int


def run_seed(seed: int, point_index: int, repeat: int) -> int:
    """Workload seed of one (point, repeat): ``seed`` for the first, a stable derivation otherwise."""
    if point_index == 0 and repeat == 0:
        return seed
    return random.Random(f"{seed}:run:{point_index}:{repeat}").getrandbits(31)


def plan_runs(targets: Sequence[str], points: Sequence[LoadPoint], repeats: int, seed: int) -> list[PlannedRun]:
    """Runs for every target x point x repeat; targets rotate per (repeat, point)."""
    if not targets or not points or repeats < 1:
        raise ValueError("need at least one target, one load point and one repeat")
    if len(set(targets)) != len(targets):
        raise ValueError(f"target names must be unique: {list(targets)}")
    runs: list[PlannedRun] = []
    for r in range(repeats):
        for i, point in enumerate(points):
            shift = (r * len(points) + i) % len(targets)
            order = [*targets[shift:], *targets[:shift]]
            runs.extend(PlannedRun(RunKey(t, point, r), run_seed(seed, i, r)) for t in order)
    return runs
