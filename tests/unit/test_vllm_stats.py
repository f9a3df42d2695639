"""LoadTracker: vLLM SchedulerStats (fakes with the same attributes) -> EngineLoad."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol.types import EngineLoad
from worker.engines.vllm_stats import LoadTracker


@dataclass
class PrefixCacheStats:
    queries: int = 0
    hits: int = 0
    requests: int = 0
    reset: bool = False


@dataclass
class SchedulerStats:
    num_running_reqs: int = 0
    num_waiting_reqs: int = 0
    kv_cache_usage: float = 0.0
    prefix_cache_stats: PrefixCacheStats | None = None
    kv_connector_stats: Any = None


def test_fresh_tracker_is_idle() -> None:
    assert LoadTracker().snapshot(live_requests=0, holds_handoffs=False) == EngineLoad()


def test_gauges_are_latest_and_prefix_counters_accumulate() -> None:
    t = LoadTracker()
    t.record_scheduler(SchedulerStats(3, 1, 0.5, PrefixCacheStats(queries=64, hits=32)))
    t.record_scheduler(SchedulerStats(1, 0, 0.25, PrefixCacheStats(queries=16, hits=0)))
    t.record_scheduler(SchedulerStats(2, 4, 0.75, None))
    snap = t.snapshot(live_requests=8, holds_handoffs=False)
    assert (snap.running, snap.waiting, snap.kv_usage) == (2, 4, 0.75)
    assert (snap.prefix_cache_queries, snap.prefix_cache_hits) == (80, 32)


NIXL = {"transfer_duration": [0.5, 0.25], "bytes_transferred": [1000, 24], "num_descriptors": [3, 4],
        "num_failed_transfers": [], "num_kv_expired_reqs": ["r1"], "num_notifications_after_expiry": [1, 1]}


def test_connector_stats_keyed_by_connector_name() -> None:
    t = LoadTracker()
    t.record_scheduler(SchedulerStats(kv_connector_stats={"NixlConnector": NIXL}))
    t.record_scheduler(SchedulerStats(kv_connector_stats={"NixlConnector": {"transfer_duration": [1.0],
                                                                             "bytes_transferred": [76]}}))
    snap = t.snapshot(live_requests=8, holds_handoffs=False)
    assert (snap.kv_pulls, snap.kv_pull_seconds, snap.kv_bytes_pulled) == (3, 1.75, 1100)
    assert (snap.kv_pull_failures, snap.kv_leases_expired, snap.kv_reads_after_expiry) == (0, 1, 2)


def test_connector_stats_as_the_metric_dict_itself_or_an_object_with_data() -> None:
    t = LoadTracker()
    t.record_scheduler(SchedulerStats(kv_connector_stats=NIXL))

    class Stats:
        data = {"transfer_duration": [2.0], "bytes_transferred": [10], "num_failed_transfers": [1]}

    t.record_scheduler(SchedulerStats(kv_connector_stats=Stats()))
    assert (t.pulls, t.pull_seconds, t.bytes_pulled, t.failed_transfers) == (3, 2.75, 1034, 1)
    assert t.snapshot(live_requests=0, holds_handoffs=False).kv_pull_failures == 1


def test_empty_connector_stats_change_nothing() -> None:
    t = LoadTracker()
    empty: list[Any] = [{}, None, {"NixlConnector": {}}, {"other": "not a dict"}]
    for stats in empty:
        t.record_scheduler(SchedulerStats(kv_connector_stats=stats))
    assert t.snapshot(live_requests=8, holds_handoffs=False) == EngineLoad()


def test_blocks_pulled_are_counted_by_the_adapter() -> None:
    t = LoadTracker()
    t.add_blocks_pulled(5)
    t.add_blocks_pulled(2)
    assert t.snapshot(live_requests=8, holds_handoffs=False).kv_blocks_pulled == 7


def test_an_idle_engine_reports_no_load_although_its_last_report_was_busy() -> None:
    # vLLM does not step (so does not report) once its last request is aborted: the last report
    # still says one request runs and a quarter of the cache is in use.
    t = LoadTracker()
    t.record_scheduler(SchedulerStats(1, 0, 0.25))
    snap = t.snapshot(live_requests=0, holds_handoffs=False)
    assert (snap.running, snap.waiting, snap.kv_usage) == (0, 0, 0.0)


def test_running_and_waiting_never_exceed_the_live_requests() -> None:
    t = LoadTracker()
    t.record_scheduler(SchedulerStats(3, 4, 0.5))
    snap = t.snapshot(live_requests=5, holds_handoffs=False)
    assert (snap.running, snap.waiting, snap.kv_usage) == (3, 2, 0.5)
    assert t.snapshot(live_requests=2, holds_handoffs=False).running == 2


def test_blocks_held_for_a_handoff_keep_their_usage_while_no_request_is_live() -> None:
    t = LoadTracker()
    t.record_scheduler(SchedulerStats(0, 0, 0.4))
    snap = t.snapshot(live_requests=0, holds_handoffs=True)
    assert (snap.running, snap.kv_usage) == (0, 0.4)
