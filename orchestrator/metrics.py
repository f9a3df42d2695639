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

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_TOKEN_GAP = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BYTES = tuple(float(4 ** k * 1024) for k in range(0, 12))


class Metrics:
    """Owns its registry; safe to create several (tests) without clashing."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("pdserve_requests_total", "Requests by endpoint and outcome",
                                ["endpoint", "status"], registry=r)
        self.ttft = Histogram("pdserve_ttft_seconds", "Time to first token", buckets=_LATENCY, registry=r)
        self.tpot = Histogram("pdserve_tpot_seconds", "Time per output token after the first",
                              buckets=_TOKEN_GAP, registry=r)
        self.itl = Histogram("pdserve_itl_seconds", "Inter-token latency (gap between streamed chunks)",
                             buckets=_TOKEN_GAP, registry=r)
        self.e2e = Histogram("pdserve_e2e_seconds", "End-to-end request latency", buckets=_LATENCY, registry=r)
        self.prefill = Histogram("pdserve_prefill_seconds", "Prefill RPC latency", buckets=_LATENCY, registry=r)
        self.handoff_latency = Histogram(
            "pdserve_kv_handoff_seconds",
            "From the prefill's KV handoff to the decode worker's first token (NIXL pull + one step)",
            buckets=_LATENCY, registry=r)
        self.handoff_bytes = Histogram("pdserve_kv_handoff_bytes", "KV bytes handed from prefill to decode",
                                       buckets=_BYTES, registry=r)
        self.handoff_blocks = Counter("pdserve_kv_handoff_blocks_total", "KV blocks handed over", registry=r)
        self.link_bandwidth = Gauge("pdserve_link_bandwidth_bytes_per_second",
                                    "Measured KV link bandwidth from a prefill host (src) to a decode host (dst)",
                                    ["src", "dst"], registry=r)
        self.link_latency = Gauge("pdserve_link_latency_seconds",
                                  "Measured KV link latency from a prefill host (src) to a decode host (dst)",
                                  ["src", "dst"], registry=r)
        self.link_pulls = Counter("pdserve_link_pulls_total",
                                  "KV pulls measured per link, by who timed them (worker, upper_bound)",
                                  ["src", "dst", "measure"], registry=r)
        self.abandoned_leases = Counter("pdserve_kv_leases_abandoned_total",
                                        "Handoffs never pulled (the prefill frees them at lease expiry)",
                                        registry=r)
        self.void_handoffs = Counter("pdserve_kv_handoffs_void_total",
                                     "Handoffs a decode worker could not read, by reason and what was done",
                                     ["reason", "action"], registry=r)
        self.tokens = Counter("pdserve_tokens_total", "Tokens by kind", ["kind"], registry=r)
        self.decisions = Counter("pdserve_route_decisions_total", "Routing decisions",
                                 ["pool", "policy", "reason"], registry=r)
        self.cached_tokens = Counter("pdserve_cached_tokens_total",
                                     "Cached prompt tokens: predicted by the router, observed by the engine",
                                     ["source"], registry=r)
        self.index_blocks = Gauge("pdserve_prefix_index_blocks", "Blocks known to the prefix index", registry=r)
        self.index_resyncs = Counter("pdserve_prefix_index_resyncs_total",
                                     "Workers dropped from the index after a KV event sequence gap", registry=r)
        self.worker_load = Gauge("pdserve_worker_load", "Per-worker load figures", ["worker", "figure"], registry=r)
        self.worker_healthy = Gauge("pdserve_worker_healthy", "1 if the worker answers", ["worker"], registry=r)
        self.worker_restarts = Counter("pdserve_worker_restarts_total",
                                       "Workers restarted after their process died", ["worker"], registry=r)
        self.pool_workers = Gauge("pdserve_pool_workers", "Workers of each pool by state (starting, healthy, "
                                  "draining, down)", ["pool", "state"], registry=r)
        self.aborts = Counter("pdserve_aborts_total", "Requests aborted on workers", ["role"], registry=r)
        self.refused = Counter("pdserve_requests_refused_total",
                               "Requests refused at admission (429) by reason and tenant", ["reason", "tenant"],
                               registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
