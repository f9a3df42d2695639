"""Prometheus metrics of the orchestrator, in a registry of its own (exposed at ``GET /metrics``).

Latency histograms are per request (TTFT, TPOT = (E2E - TTFT) / (output tokens - 1), E2E) and per
token gap (ITL). Route decisions are counted by pool, policy and reason (the same label as the
``X-Route-Reason`` header). Hit accounting compares the router's predicted cached tokens with what
the engine reports, as sums (ratios are taken by the reader: block-weighted, not means of ratios).

Links: ``pdserve_link_bandwidth_bytes_per_second{src,dst}`` and ``pdserve_link_latency_seconds{src,dst}``
are the measured table's estimate for each (prefill host, decode host) pair that has carried a KV pull
(pairs never measured are absent: the scorer uses the configured prior for them), updated at each pull;
``pdserve_link_pulls_total{src,dst,measure}`` counts the pulls behind them, ``measure="worker"`` for pulls
the decode worker timed itself (the simulated engine) and ``"upper_bound"`` for those the orchestrator
timed from the Generate call to the first token (vLLM, which cannot attribute a NIXL transfer to a
request), so their estimate is a lower bound of the link's bandwidth.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_TOKEN_GAP = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BYTES = tuple(float(4 ** k * 1024) for k in range(0, 12))


class MetricFamilies:
    """The registry and every metric family. Owns its registry: safe to create several (tests) without
    clashing. Shared by every served model's ``Metrics``."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        m = ["model"]
        self.requests = Counter("pdserve_requests_total", "Requests by endpoint and outcome",
                                ["model", "endpoint", "status"], registry=r)
        self.ttft = Histogram("pdserve_ttft_seconds", "Time to first token", buckets=_LATENCY, labelnames=m, registry=r)
        self.tpot = Histogram("pdserve_tpot_seconds", "Time per output token after the first",
                              buckets=_TOKEN_GAP, labelnames=m, registry=r)
        self.itl = Histogram("pdserve_itl_seconds", "Inter-token latency (gap between streamed chunks)",
                             buckets=_TOKEN_GAP, labelnames=m, registry=r)
        self.e2e = Histogram("pdserve_e2e_seconds", "End-to-end request latency", buckets=_LATENCY,
                             labelnames=m, registry=r)
        self.prefill = Histogram("pdserve_prefill_seconds", "Prefill RPC latency", buckets=_LATENCY,
                                 labelnames=m, registry=r)
        self.handoff_latency = Histogram(
            "pdserve_kv_handoff_seconds",
            "From the Generate call with a KV handoff to the decode worker's first token (NIXL pull + one step)",
            buckets=_LATENCY, labelnames=m, registry=r)
        self.first_tokens = Counter(
            "pdserve_first_tokens_total",
            "Answers by the worker whose token opened them: prefill (sent as the prefill returned) or decode",
            ["model", "source"], registry=r)
        self.handoff_bytes = Histogram("pdserve_kv_handoff_bytes", "KV bytes handed from prefill to decode",
                                       buckets=_BYTES, labelnames=m, registry=r)
        self.handoff_blocks = Counter("pdserve_kv_handoff_blocks_total", "KV blocks handed over",
                                      labelnames=m, registry=r)
        self.link_bandwidth = Gauge("pdserve_link_bandwidth_bytes_per_second",
                                    "Measured KV link bandwidth from a prefill host (src) to a decode host (dst)",
                                    ["model", "src", "dst"], registry=r)
        self.link_latency = Gauge("pdserve_link_latency_seconds",
                                  "Measured KV link latency from a prefill host (src) to a decode host (dst)",
                                  ["model", "src", "dst"], registry=r)
        self.link_pulls = Counter("pdserve_link_pulls_total",
                                  "KV pulls measured per link, by who timed them (worker, upper_bound)",
                                  ["model", "src", "dst", "measure"], registry=r)
        self.abandoned_leases = Counter("pdserve_kv_leases_abandoned_total",
                                        "Handoffs no decode worker read, freed on their prefill worker at once",
                                        labelnames=m, registry=r)
        self.void_handoffs = Counter("pdserve_kv_handoffs_void_total",
                                     "Handoffs a decode worker could not read, by reason and what was done",
                                     ["model", "reason", "action"], registry=r)
        self.tokens = Counter("pdserve_tokens_total", "Tokens by kind", ["model", "kind"], registry=r)
        self.decisions = Counter("pdserve_route_decisions_total", "Routing decisions",
                                 ["model", "pool", "policy", "reason"], registry=r)
        self.cached_tokens = Counter("pdserve_cached_tokens_total",
                                     "Cached prompt tokens: predicted by the router, observed by the engine",
                                     ["model", "source"], registry=r)
        self.index_blocks = Gauge("pdserve_prefix_index_blocks", "Blocks known to the prefix index",
                                  labelnames=m, registry=r)
        self.index_resyncs = Counter("pdserve_prefix_index_resyncs_total",
                                     "Workers dropped from the index after a KV event sequence gap",
                                     labelnames=m, registry=r)
        self.worker_load = Gauge("pdserve_worker_load", "Per-worker load figures",
                                 ["model", "worker", "figure"], registry=r)
        self.worker_healthy = Gauge("pdserve_worker_healthy", "1 if the worker answers",
                                    ["model", "worker"], registry=r)
        self.worker_restarts = Counter("pdserve_worker_restarts_total",
                                       "Workers restarted after their process died", ["model", "worker"], registry=r)
        self.pool_workers = Gauge("pdserve_pool_workers", "Workers of each pool by state (starting, healthy, "
                                  "draining, down)", ["model", "pool", "state"], registry=r)
        self.aborts = Counter("pdserve_aborts_total", "Requests aborted on workers", ["model", "role"], registry=r)
        self.refused = Counter("pdserve_requests_refused_total",
                               "Requests refused at admission (429) by reason and tenant", ["reason", "tenant"],
                               registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def members(self) -> list[MetricWrapperBase]:
        """Every family, in declaration order."""
        return [v for v in vars(self).values() if isinstance(v, MetricWrapperBase)]


class ForModel:
    """One family seen by one model: ``labels``/``remove`` take the family's other labels; ``inc``,
    ``set`` and ``observe`` act on a family with no other label."""

    def __init__(self, family: MetricWrapperBase, model: str) -> None:
        self.family = family
        self._model = model

    def labels(self, *values: str) -> Any:
        return self.family.labels(self._model, *values)

    def remove(self, *values: str) -> None:
        """Drop one series (``KeyError`` when it has none, as ``prometheus_client`` does)."""
        self.family.remove(self._model, *values)

    def inc(self, amount: float = 1.0) -> None:
        self.labels().inc(amount)

    def set(self, value: float) -> None:
        self.labels().set(value)

    def observe(self, value: float) -> None:
        self.labels().observe(value)


class Metrics:
    """What one model's service writes: every family bound to ``model`` (``refused`` has no model label
    and is the family itself). ``families`` is shared by every model of the deployment (a new one when
    not given); ``registry`` and ``exposition`` are the families'."""

    def __init__(self, model: str = "", families: MetricFamilies | None = None) -> None:
        f = self.families = families or MetricFamilies()
        self.registry = f.registry
        self.requests = ForModel(f.requests, model)
        self.ttft = ForModel(f.ttft, model)
        self.tpot = ForModel(f.tpot, model)
        self.itl = ForModel(f.itl, model)
        self.e2e = ForModel(f.e2e, model)
        self.prefill = ForModel(f.prefill, model)
        self.handoff_latency = ForModel(f.handoff_latency, model)
        self.first_tokens = ForModel(f.first_tokens, model)
        self.handoff_bytes = ForModel(f.handoff_bytes, model)
        self.handoff_blocks = ForModel(f.handoff_blocks, model)
        self.link_bandwidth = ForModel(f.link_bandwidth, model)
        self.link_latency = ForModel(f.link_latency, model)
        self.link_pulls = ForModel(f.link_pulls, model)
        self.abandoned_leases = ForModel(f.abandoned_leases, model)
        self.void_handoffs = ForModel(f.void_handoffs, model)
        self.tokens = ForModel(f.tokens, model)
        self.decisions = ForModel(f.decisions, model)
        self.cached_tokens = ForModel(f.cached_tokens, model)
        self.index_blocks = ForModel(f.index_blocks, model)
        self.index_resyncs = ForModel(f.index_resyncs, model)
        self.worker_load = ForModel(f.worker_load, model)
        self.worker_healthy = ForModel(f.worker_healthy, model)
        self.worker_restarts = ForModel(f.worker_restarts, model)
        self.pool_workers = ForModel(f.pool_workers, model)
        self.aborts = ForModel(f.aborts, model)
        self.refused = f.refused
        for member in vars(self).values():  # a family of the model alone shows 0 from the start, not nothing
            if isinstance(member, ForModel) and tuple(member.family._labelnames) == ("model",):
                member.labels()

    def exposition(self) -> bytes:
        return self.families.exposition()
