"""What the planner searches over: P:D splits of the workers (and which to try), and the fleet's routing
settings (frozen). Pure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.scheduler.disagg_policy import DisaggPolicy
from orchestrator.scheduler.plugin import PluginEnv
from orchestrator.scheduler.profiles import build_pipeline, preset
from orchestrator.scheduler.router import PrefixMatcher, Router


@dataclass(frozen=True)
class Split:
    """``prefill`` prefill + ``decode`` decode workers; ``prefill == 0`` means ``decode`` colocated workers."""

    prefill: int
    decode: int

    def __post_init__(self) -> None:
        if self.prefill < 0 or self.decode < 1:
            raise ValueError(f"a split needs prefill >= 0 and decode >= 1, got {self.prefill}:{self.decode}")

    @property
    def colocated(self) -> bool:
        return self.prefill == 0

    @property
    def workers(self) -> int:
        return self.prefill + self.decode

    @property
    def label(self) -> str:
        return f"colocated x{self.decode}" if self.colocated else f"{self.prefill}P:{self.decode}D"


@dataclass(frozen=True)
class FleetPolicy:
    """Routing and disaggregation settings; the defaults are those of ``configs/sim-64.yaml`` (and of
    ``configs/sim-64-colocated.yaml`` for a colocated split), so a planned split can be checked there."""

    prefill_routing: str = "kv_aware"
    decode_routing: str = "decode"
    colocated_routing: str = "kv_aware"
    prefill_queue_bound: int = 16
    decode_queue_bound: int = 256
    min_remote_tokens: int = 256
    local_when_prefill_saturated: bool = True
    seed: int = 0

    def router(self, model: str, block_size: int, index: PrefixMatcher, *, colocated: bool = False) -> Router:
        """The orchestrator's router with these settings: a colocated fleet places every request with
        ``colocated_routing`` (as ``orchestrator.service`` uses the decode pool's profile then)."""
        env = PluginEnv(seed=self.seed)
        first = self.colocated_routing if colocated else self.prefill_routing
        return Router(model=model, block_size=block_size, index=index,
                      prefill=build_pipeline(preset(first), env),
                      decode=build_pipeline(preset(self.decode_routing), env),
                      disagg=DisaggPolicy(min_remote_tokens=self.min_remote_tokens,
                                          local_when_prefill_saturated=self.local_when_prefill_saturated))


def all_splits(workers: int, colocated: bool = True) -> list[Split]:
    """Every disaggregated split of ``workers`` (1..workers-1 prefill), then colocated on all of them."""
    if workers < 1:
        raise ValueError("need at least one worker")
    splits = [Split(p, workers - p) for p in range(1, workers)]
    return [*splits, Split(0, workers)] if colocated else splits


def grid_prefill_counts(workers: int, points: int) -> list[int]:
    """At most ``points`` prefill counts spread evenly over 1..workers-1 (both ends included)."""
    if workers < 2:
        return []
    if points >= workers - 1:
        return list(range(1, workers))
    step = (workers - 2) / max(1, points - 1)
    return sorted({1 + round(k * step) for k in range(points)})


def refine_prefill_counts(best: int, tried: Sequence[int], workers: int) -> list[int]:
    """Prefill counts strictly between ``best``'s tried neighbours (1..workers-1) not tried yet."""
    below = max((p for p in tried if p < best), default=0)
    above = min((p for p in tried if p > best), default=workers)
    return [p for p in range(max(1, below + 1), min(workers, above)) if p not in tried]


def model_size(workers: int, max_simulated: int) -> int:
    """Workers to simulate for a fleet of ``workers``: all of them up to ``max_simulated``, else
    ``workers / k`` (rounded) for the smallest whole k that fits. A model of N/k workers at rate R/k stands
    for the fleet at rate R: the router spreads requests over workers, so at a fixed P:D ratio each worker
    sees the same traffic either way (the larger fleet multiplexes a little better, and its splits are
    resolved only to multiples of about k)."""
    if workers <= max_simulated:
        return workers
    return max(2, round(workers / math.ceil(workers / max_simulated)))


def scale_split(split: Split, simulated: int, fleet: int) -> Split:
    """The split of ``fleet`` workers that ``split`` of a ``simulated``-worker model stands for."""
    if split.colocated:
        return Split(0, fleet)
    p = min(fleet - 1, max(1, round(split.prefill * fleet / simulated)))
    return Split(p, fleet - p)
