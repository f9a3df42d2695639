"""Load figures from vLLM's scheduler statistics, captured by a custom stat logger.

vLLM calls ``record`` from its output loop with ``SchedulerStats`` (running/waiting, KV usage, prefix
cache counters, connector stats). ``LoadTracker`` keeps the latest snapshot plus running totals of
the NIXL connector's transfer figures; the adapter reads it with ``snapshot()``. Single-threaded use
from the engine's event loop; no locking.

vLLM publishes scheduler statistics only from engine steps, and an engine with no request left does
not step: after the last request is aborted, the last report still counts it as running (and its
blocks as used) for as long as the engine stays idle. ``snapshot`` therefore takes what the adapter
knows for certain (how many requests it has live in the engine, whether any handed-off blocks may
still be held) and never reports more running/waiting requests than are live, nor KV usage from a
report older than the engine's last request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol.types import EngineLoad


@dataclass
class LoadTracker:
    """Mutable accumulator owned by one vLLM adapter."""

    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0
    prefix_queries: int = 0
    prefix_hits: int = 0
    pulls: int = 0
    bytes_pulled: int = 0
    pull_seconds: float = 0.0
    blocks_pulled: int = 0
    failed_transfers: int = 0
    expired_leases: int = 0
    reads_after_expiry: int = 0

    def record_scheduler(self, stats: Any) -> None:
        self.running = int(stats.num_running_reqs)
        self.waiting = int(stats.num_waiting_reqs)
        self.kv_usage = float(stats.kv_cache_usage)
        cache = stats.prefix_cache_stats
        if cache is not None:
            self.prefix_queries += int(cache.queries)
            self.prefix_hits += int(cache.hits)
        connector = stats.kv_connector_stats
        if connector:
            self._record_connector(connector)

    def _record_connector(self, connector: Any) -> None:
        # vLLM reports {connector_name: {metric: [values...]}} or the metric dict itself.
        data = connector
        if isinstance(connector, dict) and "transfer_duration" not in connector:
            values = [v for v in connector.values() if isinstance(v, dict)]
            data = values[0] if values else {}
        if not isinstance(data, dict):
            data = getattr(data, "data", {})
        durations = data.get("transfer_duration", []) or []
        self.pulls += len(durations)
        self.pull_seconds += float(sum(durations))
        self.bytes_pulled += int(sum(data.get("bytes_transferred", []) or []))
        self.failed_transfers += len(data.get("num_failed_transfers", []) or [])
        self.expired_leases += len(data.get("num_kv_expired_reqs", []) or [])
        self.reads_after_expiry += len(data.get("num_notifications_after_expiry", []) or [])

    def add_blocks_pulled(self, blocks: int) -> None:
        self.blocks_pulled += blocks

    def snapshot(self, live_requests: int, holds_handoffs: bool) -> EngineLoad:
        """The load as of now. ``live_requests``: requests submitted to the engine and neither
        finished nor aborted; ``holds_handoffs``: a prefill handoff's blocks may still be held under
        its lease. With no live request and no held handoff the engine is idle: nothing runs or
        waits and no block is in use (cached blocks are free in vLLM's usage figure)."""
        running = min(self.running, live_requests)
        waiting = min(self.waiting, live_requests - running)
        idle = live_requests == 0 and not holds_handoffs
        return EngineLoad(
            running=running,
            waiting=waiting,
            kv_usage=0.0 if idle else self.kv_usage,
            prefix_cache_queries=self.prefix_queries,
            prefix_cache_hits=self.prefix_hits,
            kv_blocks_pulled=self.blocks_pulled,
            kv_bytes_pulled=self.bytes_pulled,
            kv_pull_seconds=self.pull_seconds,
            kv_pulls=self.pulls,
            kv_leases_expired=self.expired_leases,
            kv_reads_after_expiry=self.reads_after_expiry,
            kv_pull_failures=self.failed_transfers,
        )


def stat_logger_factory(tracker: LoadTracker) -> Any:
    """A vLLM ``StatLoggerFactory`` whose loggers feed ``tracker`` (imports vLLM lazily)."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _TrackerLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self._tracker = tracker

        def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
                   engine_idx: int = 0) -> None:
            if scheduler_stats is not None:
                self._tracker.record_scheduler(scheduler_stats)

        def log_engine_initialized(self) -> None:
            return None

    return _TrackerLogger
