"""Every built-in plugin, registered by name: the one place a new filter, scorer or picker is added.

A new policy is one class (in ``filters``/``scorers``/``pickers``/``decode_select``) plus one line here.
The registries are built once at import and never mutated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from .decision import NO_PREFERENCE, SATURATION_VALVE
from .decode_select import LocalPrefillScorer, TransferCostScorer
from .filters import HealthyFilter, KvHeadroomFilter
from .pickers import MaxScorePicker, RandomPicker, RoundRobinPicker, SoftmaxPicker
from .plugin import Filter, Picker, Plugin, PluginEnv, PluginParams, Scorer
from .scorers import KvAwareScorer, KvUsageScorer, LeastLoadedScorer, PrefixScorer, SessionScorer

P = TypeVar("P", bound=Plugin)


class Registry(Generic[P]):
    """Name -> plugin class for one plugin kind. Read-only after construction."""

    def __init__(self, kind: str, entries: Mapping[str, type[P]]) -> None:
        self.kind = kind
        self._entries = dict(entries)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._entries))

    def get(self, name: str) -> type[P]:
        """The class registered as ``name``. Raises ``KeyError`` naming the known plugins."""
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names)}") from None

    def parse_params(self, name: str, params: Mapping[str, Any]) -> PluginParams:
        """Validate ``params`` against the plugin's ``Params``. Raises ``KeyError`` for an unknown plugin
        and ``ValueError`` (listing every problem) for bad or unknown parameters."""
        cls = self.get(name)
        try:
            return cls.Params.model_validate(dict(params))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '-'}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"{self.kind} {name!r} params: {problems}") from None

    def create(self, name: str, params: Mapping[str, Any], env: PluginEnv) -> P:
        """A fresh plugin instance (each pipeline owns its own, so picker state is never shared)."""
        return self.get(name)(self.parse_params(name, params), env)


FILTERS: Registry[Filter] = Registry("filter", {
    "healthy": HealthyFilter,
    "kv_headroom": KvHeadroomFilter,
})

SCORERS: Registry[Scorer] = Registry("scorer", {
    "least_loaded": LeastLoadedScorer,
    "kv_usage": KvUsageScorer,
    "prefix": PrefixScorer,
    "session": SessionScorer,
    "kv_aware": KvAwareScorer,
    "transfer_cost": TransferCostScorer,
    "local_prefill": LocalPrefillScorer,
})

PICKERS: Registry[Picker] = Registry("picker", {
    "max_score": MaxScorePicker,
    "round_robin": RoundRobinPicker,
    "random": RandomPicker,
    "softmax": SoftmaxPicker,
})

# Every reason label a pipeline can emit: the bounded label set for metrics and X-Route-Reason.
REASONS: frozenset[str] = frozenset(
    {SATURATION_VALVE, NO_PREFERENCE}
    | {label for name in SCORERS.names for label in SCORERS.get(name).labels}
    | {label for name in PICKERS.names for label in PICKERS.get(name).labels}
)
