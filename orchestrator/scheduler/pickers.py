"""Built-in pickers: choose one candidate index from the combined scores. Registered in ``registry``.

Every picker may keep state (a call counter, a seeded RNG); ``checkpoint``/``rewind`` save and restore it,
so a caller can preview a pick (``Router.plan``) without moving the picker on.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from pydantic import Field

from .plugin import Candidates, Picker, PluginEnv, PluginParams

_EPS = 1e-12


def best_index(cands: Candidates, scores: Sequence[float], rng: random.Random) -> int:
    """Highest score (within 1e-12); ties go to the lowest load (running + waiting), then to a uniform
    draw from ``rng`` among what is still tied. ``rng`` is advanced only when a tie remains after load, so
    a run is deterministic for a given seed and an untied decision consumes no randomness."""
    top = max(scores)
    tied = [i for i, s in enumerate(scores) if s >= top - _EPS]
    if len(tied) > 1:
        least = min(cands.workers[i].load for i in tied)
        tied = [i for i in tied if cands.workers[i].load == least]
    return tied[0] if len(tied) == 1 else tied[rng.randrange(len(tied))]


class _SeededPicker(Picker):
    """A picker with a private RNG seeded with ``params.seed`` (default: ``env.seed``); its state is the
    RNG's."""

    class Params(PluginParams):
        seed: int | None = None

    def __init__(self, params: Params, env: PluginEnv) -> None:
        super().__init__(params, env)
        self._rng = random.Random(env.seed if params.seed is None else params.seed)

    def checkpoint(self) -> object:
        return self._rng.getstate()

    def rewind(self, state: object) -> None:
        self._rng.setstate(state)  # type: ignore[arg-type]


class MaxScorePicker(_SeededPicker):
    """Argmax with the ``best_index`` tie-break (load, then the seeded RNG: idle equal-cost workers share
    the work instead of the first one taking it all). Advances the RNG on ties (mutates)."""

    def pick(self, cands: Candidates, scores: Sequence[float]) -> int:
        return best_index(cands, scores, self._rng)


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

    def checkpoint(self) -> object:
        return self._calls

    def rewind(self, state: object) -> None:
        assert isinstance(state, int)
        self._calls = state


class RandomPicker(_SeededPicker):
    """Ignores scores: uniform choice from a private RNG seeded with ``seed`` (default: ``env.seed``), so a
    run is reproducible. Advances the RNG (mutates)."""

    reason = "random"
    labels = frozenset({"random"})

    def pick(self, cands: Candidates, scores: Sequence[float]) -> int:
        return self._rng.randrange(len(cands.workers))


class SoftmaxPicker(_SeededPicker):
    """Samples candidate ``i`` with probability proportional to ``exp((score_i - max) / temperature)``
    from a seeded private RNG (mutates it); ``temperature == 0`` is argmax with the ``best_index``
    tie-break. Spreads near-ties instead of sending every one of them to the same worker."""

    class Params(_SeededPicker.Params):
        temperature: float = Field(default=0.05, ge=0)

    params: Params

    def pick(self, cands: Candidates, scores: Sequence[float]) -> int:
        if self.params.temperature == 0:
            return best_index(cands, scores, self._rng)
        top = max(scores)
        weights = [math.exp((s - top) / self.params.temperature) for s in scores]
        return self._rng.choices(range(len(scores)), weights=weights)[0]
