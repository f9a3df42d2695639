"""Built-in filters. Each is registered by name in ``registry``."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field

from .plugin import Filter, PluginParams
from .request import RouteRequest, WorkerState


class HealthyFilter(Filter):
    """Keeps healthy workers only (hard: may leave none)."""

    def apply(self, request: RouteRequest, workers: tuple[WorkerState, ...],
              match: Mapping[str, int]) -> tuple[WorkerState, ...]:
        return tuple(w for w in workers if w.healthy)


class KvHeadroomFilter(Filter):
    """Keeps workers whose KV usage is at most ``max_usage`` (soft: if none qualifies, keeps all, since
    refusing the request would be worse than queueing it on a full worker)."""

    class Params(PluginParams):
        max_usage: float = Field(default=0.95, gt=0, le=1)

    params: Params

    def apply(self, request: RouteRequest, workers: tuple[WorkerState, ...],
              match: Mapping[str, int]) -> tuple[WorkerState, ...]:
        kept = tuple(w for w in workers if w.kv_usage <= self.params.max_usage)
        return kept or workers
