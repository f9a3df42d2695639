"""Built-in pickers: choose one candidate index from the combined scores. Registered in ``registry``."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from pydantic import Field

from .plugin import Candidates, Picker, PluginEnv, PluginParams

_EPS = 1e-12


def best_index(cands: Candidates, scores: Sequence[float]) -> int:
    """Highest score; ties go to the lowest load (running + waiting), then to the earliest candidate."""
    top = max(scores)
    return min((i for i, s in enumerate(scores) if s >= top - _EPS), key=lambda i: cands.workers[i].load)


class MaxScorePicker(Picker):
    """Deterministic argmax with the ``best_index`` tie-break. Stateless."""

    def pick(self, cands: Candidates, scores: Sequence[float]) -> int:
        return best_index(cands, scores)


class RoundRobinPicker(Picker):
    """Ignores scores: the n-th call picks candidate ``n mod len`` among the candidates sorted by worker id.
    Keeps a call counter (mutates)."""

    reason = "round_robin"
    labels = frozenset({"round_robin"})

    def __init__(self, params: PluginParams, env: PluginEnv) -> None:
        super().__init__(params, env)
        self._calls = 0

    def pick(self, cands: Candidates, scores: Sequence[float]) -> int:
        order = sorted(range(len(cands.workers)), key=lambda i: cands.workers[i].worker_id)
        chosen = order[self._calls % len(order)]
        self._calls += 1
        return chosen


class RandomPicker(Picker):
    """Ignores scores: uniform choice from a private RNG seeded with ``seed`` (default: ``env.seed``), so a
    run is reproducible. Advances the RNG (mutates)."""

    reason = "random"
    labels = frozenset({"random"})

    class Params(PluginParams):
        seed: int | None = None

    def __init__(self, params: Params, env: PluginEnv) -> None:
        super().__init__(params, env)
        self._rng = random.Random(env.seed if params.seed is None else params.seed)

    def pick(self, cands: Candidates, scores: Sequence[float]) -> int:
        return self._rng.randrange(len(cands.workers))


class SoftmaxPicker(Picker):
    """Samples candidate ``i`` with probability proportional to ``exp((score_i - max) / temperature)``
    from a seeded private RNG (mutates it); ``temperature == 0`` is argmax. Spreads near-ties instead of
    sending every one of them to the same worker."""

    class Params(PluginParams):
        temperature: float = Field(default=0.05, ge=0)
        seed: int | None = None

    def __init__(self, params: Params, env: PluginEnv) -> None:
        super().__init__(params, env)
        self.temperature = params.temperature
        self._rng = random.Random(env.seed if params.seed is None else params.seed)

    def pick(self, cands: Candidates, scores: Sequence[float]) -> int:
        if self.temperature == 0:
            return best_index(cands, scores)
        top = max(scores)
        weights = [math.exp((s - top) / self.temperature) for s in scores]
        return self._rng.choices(range(len(scores)), weights=weights)[0]
