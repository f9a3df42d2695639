"""Where a run's time goes: per-thread CPU from /proc, and pdserve's stage means from its real exposition."""

from __future__ import annotations

import os
import threading
import time

from bench.suites.where_time_goes import ThreadTime, stage_means, stage_totals, thread_times, thread_usage
from orchestrator.metrics import Metrics


def test_a_busy_thread_shows_its_cpu_time_and_cores() -> None:
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    worker = threading.Thread(target=spin, name="spinner")
    before = thread_times(os.getpid())
    worker.start()
    time.sleep(0.5)
    after = thread_times(os.getpid())
    stop.set()
    worker.join()
    usage = thread_usage(before, after)
    spinner = next(row for row in usage if row["tid"] == worker.native_id)
    assert spinner["cpu_s"] >= 0.05 and spinner["pid"] == os.getpid()
    allowed = sorted(os.sched_getaffinity(0))
    assert spinner["cores"] in (str(allowed[0]) if len(allowed) == 1 else f"{allowed[0]}-{allowed[-1]}",
                                ",".join(map(str, allowed)))


def test_thread_usage_counts_new_threads_from_zero_and_drops_idle_ones() -> None:
    t = ThreadTime(1, 1, "python", "main", 5.0, "0")
    before = {(1, 1): t, (1, 2): ThreadTime(1, 2, "python", "idle", 2.0, "1")}
    after = {(1, 1): ThreadTime(1, 1, "python", "main", 6.5, "0"), (1, 2): before[(1, 2)],
             (1, 3): ThreadTime(1, 3, "python", "new", 0.25, "1")}
    assert [(r["thread"], r["cpu_s"]) for r in thread_usage(before, after)] == [("main", 1.5), ("new", 0.25)]


def test_stage_means_come_from_pdserves_own_metrics() -> None:
    metrics = Metrics("m")
    before = stage_totals(metrics.exposition().decode())
    for ttft, prefill, handoff in ((0.6, 0.45, 0.1), (0.8, 0.55, 0.2)):
        metrics.ttft.labels().observe(ttft)
        metrics.prefill.labels().observe(prefill)
        metrics.handoff_latency.labels().observe(handoff)
    metrics.worker_load.labels("decode-0", "kv_pull_seconds").set(0.05)
    metrics.worker_load.labels("decode-0", "kv_pulls").set(2)
    metrics.first_tokens.labels("prefill").inc(3)
    metrics.first_tokens.labels("decode").inc(1)
    means = stage_means(before, stage_totals(metrics.exposition().decode()))
    assert means == {"ttft_ms": 700.0, "prefill_rpc_ms": 500.0, "handoff_to_first_token_ms": 150.0,
                     "nixl_pull_ms": 25.0, "led_share": 0.75}
    assert stage_means(before, before)["ttft_ms"] is None  # no request in the window
