"""The three plugin contracts of a pool profile: filters, scorers and one picker.

A plugin is a small class, built once per pipeline from its validated ``Params`` (a pydantic model that
forbids unknown keys) and the shared ``PluginEnv``. Plugins do no I/O. Scorers and filters must not keep
state between calls; pickers may (a round-robin counter, a seeded RNG), say so, and let ``checkpoint`` and
``rewind`` save and restore it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from .links import LinkTable
from .request import RouteRequest, WorkerState


class PluginParams(BaseModel):
    """Base of every plugin's parameters: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class PluginEnv:
    """What the host process hands every plugin: the base seed for random pickers and the link table the
    transfer-cost scorer reads (from config or measured)."""

    seed: int = 0
    links: LinkTable = field(default_factory=LinkTable)


@dataclass(frozen=True)
class Candidates:
    """One decision's inputs after filtering: the request, the workers still in the running (non-empty)
    and the index match (worker id -> leading blocks held; absent means 0)."""

    request: RouteRequest
    workers: tuple[WorkerState, ...]
    match: Mapping[str, int]

    def matched(self, worker: WorkerState) -> int:
        return self.match.get(worker.worker_id, 0)


class Plugin:
    """Shared constructor contract: ``cls(cls.Params.model_validate(raw), env)``."""

    Params: ClassVar[type[PluginParams]] = PluginParams

    def __init__(self, params: Any, env: PluginEnv) -> None:
        self.params = params
        self.env = env


class Filter(Plugin, ABC):
    """Narrows the workers. Returns a subset in the given order; may return an empty tuple (the pipeline
    then raises ``NoEligibleWorker``). A *soft* filter returns its input unchanged instead of emptying it."""

    @abstractmethod
    def apply(self, request: RouteRequest, workers: tuple[WorkerState, ...],
              match: Mapping[str, int]) -> tuple[WorkerState, ...]: ...


class Scorer(Plugin, ABC):
    """Scores each candidate in [0, 1], higher is better, or abstains (None) when it has no opinion on
    this request (e.g. no session key). ``labels`` lists every reason ``reason`` can return."""

    labels: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def score(self, cands: Candidates) -> Sequence[float] | None: ...

    def reason(self, cands: Candidates, chosen: int) -> str:
        """The reason label when this scorer is the profile's leading voice and ``chosen`` was picked."""
        return next(iter(self.labels))


class Picker(Plugin, ABC):
    """Chooses one candidate index from the combined scores. ``reason`` is the label for its picks when
    the picker alone decides (round robin, random), or None to let the leading scorer explain."""

    reason: ClassVar[str | None] = None
    labels: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def pick(self, cands: Candidates, scores: Sequence[float]) -> int: ...

    def checkpoint(self) -> object:
        """An opaque copy of the picker's state (None for a stateless picker), for ``rewind``."""
        return None

    def rewind(self, state: object) -> None:
        """Restore the state ``checkpoint`` returned: the next picks are those that would have followed it."""
