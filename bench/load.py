"""Load shapes: when each request of a run is sent (open loop) or how many run at once (closed loop).

A shape is registered by name; its swept value is the ``LoadPoint.value``:

* ``closed``   value = concurrency: that many requests in flight, the next one sent as one finishes.
* ``poisson``  value = rate in requests/s: exponential inter-arrival times (first request at 0);
               ``inf`` sends everything at once.
* ``burst``    value = burst size N: N requests arrive together every ``burst_period_s`` seconds.
* ``trace``    value = speed-up factor: the trace's own timestamps divided by the value.

``arrivals`` is pure: it returns copies of the specs with ``arrival_s`` set (non-decreasing in list
order, which the runner relies on), deterministic in ``seed``.
"""

from __future__ import annotations

import itertools
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from bench.spec import RequestSpec


@dataclass(frozen=True)
class ShapeOptions:
    """Parameters of the shapes that are not swept."""

    burst_period_s: float = 1.0


class LoadShape(ABC):
    name: str

    def concurrency(self, value: float) -> int | None:
        """Requests kept in flight (closed loop), or ``None`` for open loop."""
        return None

    @abstractmethod
    def arrivals(self, specs: Sequence[RequestSpec], value: float, seed: int) -> list[RequestSpec]:
        """``specs`` with ``arrival_s`` set (``None`` for closed loop)."""

    def validate(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"{self.name}: load value must be > 0, got {value}")


class ClosedLoop(LoadShape):
    name = "closed"

    def concurrency(self, value: float) -> int | None:
        return max(1, int(value))

    def arrivals(self, specs: Sequence[RequestSpec], value: float, seed: int) -> list[RequestSpec]:
        return [s.with_arrival(None) for s in specs]


class Poisson(LoadShape):
    name = "poisson"

    def arrivals(self, specs: Sequence[RequestSpec], value: float, seed: int) -> list[RequestSpec]:
        self.validate(value)
        if math.isinf(value):
            return [s.with_arrival(0.0) for s in specs]
        rng = random.Random(f"{seed}:poisson:{value}")
        gaps = [rng.expovariate(value) for _ in specs[1:]]
        return [s.with_arrival(t) for s, t in zip(specs, itertools.accumulate(gaps, initial=0.0), strict=False)]


class Burst(LoadShape):
    name = "burst"

    def __init__(self, options: ShapeOptions) -> None:
        if options.burst_period_s <= 0:
            raise ValueError("burst period must be > 0")
        self.period = options.burst_period_s

    def arrivals(self, specs: Sequence[RequestSpec], value: float, seed: int) -> list[RequestSpec]:
        self.validate(value)
        size = max(1, int(value))
        return [s.with_arrival((i // size) * self.period) for i, s in enumerate(specs)]


class TraceTime(LoadShape):
    name = "trace"

    def arrivals(self, specs: Sequence[RequestSpec], value: float, seed: int) -> list[RequestSpec]:
        self.validate(value)
        if any(s.arrival_s is None for s in specs):
            raise ValueError("--load trace needs a workload with timestamps (a trace file that has them)")
        first = min((s.arrival_s or 0.0) for s in specs) if specs else 0.0
        return [s.with_arrival(((s.arrival_s or 0.0) - first) / value) for s in specs]


SHAPES = {
    "closed": lambda opts: ClosedLoop(),
    "poisson": lambda opts: Poisson(),
    "burst": Burst,
    "trace": lambda opts: TraceTime(),
}


def make_shape(name: str, options: ShapeOptions = ShapeOptions()) -> LoadShape:
    try:
        factory = SHAPES[name]
    except KeyError:
        raise ValueError(f"unknown load shape {name!r}; known: {', '.join(SHAPES)}") from None
    return factory(options)
