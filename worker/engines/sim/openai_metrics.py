"""``/metrics`` of the sim HTTP face: a sim engine's figures under vLLM's Prometheus names (vLLM 0.32,
``vllm/v1/metrics/loggers.py``), labelled ``model_name`` and ``engine`` ("0", one engine per server),
read at scrape time. Counters get Prometheus' ``_total`` suffix, as vLLM's do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.engines.sim.adapter import SimEngine

FINISH_REASONS = ("stop", "length", "abort")


class RequestCounts(Protocol):
    """What the HTTP face counts itself: the model name it serves, tokens of finished requests, and
    finished requests by finish reason."""

    model: str
    prompt_tokens: int
    generation_tokens: int
    finished: Counter[str]


class VllmMetrics(Collector):
    """Gauges ``vllm:num_requests_running``, ``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc``
    (blocks in use over all blocks; cached but free blocks are not in use, as in vLLM); counters
    ``vllm:prefix_cache_queries``/``_hits`` (prompt tokens looked up / found in the prefix cache),
    ``vllm:num_preemptions``, ``vllm:prompt_tokens``, ``vllm:generation_tokens`` and
    ``vllm:request_success{finished_reason}``."""

    def __init__(self, engine: SimEngine, counts: RequestCounts) -> None:
        self._engine = engine
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self._counts
        load, names, values = self._engine.load(), ["model_name", "engine"], [counts.model, "0"]
        gauges = (("vllm:num_requests_running", "Number of requests in model execution batches.", load.running),
                  ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", load.waiting),
                  ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", load.kv_usage))
        counters = (
            ("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.",
             load.prefix_cache_queries),
            ("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
             load.prefix_cache_hits),
            ("vllm:num_preemptions", "Cumulative number of preemption from the engine.",
             self._engine.core.scheduler.num_preemptions),
            ("vllm:prompt_tokens", "Number of prefill tokens processed.", counts.prompt_tokens),
            ("vllm:generation_tokens", "Number of generation tokens processed.", counts.generation_tokens))
        for family, rows in ((GaugeMetricFamily, gauges), (CounterMetricFamily, counters)):
            for name, doc, value in rows:
                metric = family(name, doc, labels=names)
                metric.add_metric(values, value)
                yield metric
        success = CounterMetricFamily("vllm:request_success", "Count of successfully processed requests.",
                                      labels=[*names, "finished_reason"])
        for reason in FINISH_REASONS:
            success.add_metric([*values, reason], counts.finished[reason])
        yield success
