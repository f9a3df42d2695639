"""What ``pdserve autoscale`` reads from a running server, parsed: one model's counters and latency histograms
from ``GET /metrics`` (``Snapshot``), their change over an interval (``Window``), and the pools from
``GET /admin/workers`` (``PoolView``). Pure: text and JSON in, typed values out.

Metrics used (``orchestrator.metrics``; every family has a ``model`` label): ``pdserve_requests_total``
(every endpoint and outcome: the request rate), ``pdserve_tokens_total{kind="prompt"|"generated"}`` and
``pdserve_cached_tokens_total{source="observed"}`` (the engine's cached prompt tokens; absent or 0 reads as
no cache hit), over the finished requests counted by ``pdserve_e2e_seconds_count``; and the
``pdserve_ttft_seconds`` and ``pdserve_itl_seconds`` histograms. A latency is the interval's mean
(``_sum``/``_count``, exact) or a quantile from the bucket counts, interpolated linearly inside a bucket as
PromQL's ``histogram_quantile`` does (so only as fine as the buckets).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from .sla import Load, Pools

STATS = ("mean", "p50", "p90", "p95", "p99")


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts ``(upper bound, count)`` by increasing bound (the last is +Inf), sum, count."""

    buckets: tuple[tuple[float, float], ...] = ()
    total: float = 0.0
    count: float = 0.0

    def __sub__(self, before: Histogram) -> Histogram:
        """The observations made since ``before`` (same buckets; missing ones count 0)."""
        old = dict(before.buckets)
        return Histogram(tuple((le, n - old.get(le, 0.0)) for le, n in self.buckets), self.total - before.total,
                         self.count - before.count)

    def mean(self) -> float | None:
        return self.total / self.count if self.count > 0 else None

    def quantile(self, q: float) -> float | None:
        """``histogram_quantile(q)``: None without observations; the highest finite bound when the rank
        falls in the +Inf bucket."""
        if self.count <= 0 or not self.buckets:
            return None
        rank, lower, below = q * self.count, 0.0, 0.0
        for le, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(le):
                    return lower
                inside = cumulative - below
                return lower + (le - lower) * ((rank - below) / inside if inside > 0 else 1.0)
            lower, below = le, cumulative
        return lower

    def stat(self, name: str) -> float | None:
        """``mean`` or ``pNN`` (one of ``STATS``)."""
        return self.mean() if name == "mean" else self.quantile(int(name[1:]) / 100)


@dataclass(frozen=True)
class Snapshot:
    """One model's cumulative figures at one scrape."""

    requests: float = 0.0
    finished: float = 0.0  # pdserve_e2e_seconds_count: requests that streamed a first token and ended
    prompt_tokens: float = 0.0
    generated_tokens: float = 0.0
    cached_tokens: float = 0.0
    ttft: Histogram = Histogram()
    itl: Histogram = Histogram()


@dataclass(frozen=True)
class Window(Snapshot):
    """The change between two snapshots ``seconds`` apart (each figure is after - before); per-request
    means are over ``finished``."""

    seconds: float = 0.0

    def load(self) -> Load:
        per = max(self.finished, 1.0)
        return Load(self.requests / self.seconds, self.prompt_tokens / per, self.cached_tokens / per,
                    self.generated_tokens / per)


def _histogram(samples: Mapping[str, list[Any]], name: str) -> Histogram:
    buckets, total, count = [], 0.0, 0.0
    for s in samples.get(name, ()):
        if s.name.endswith("_bucket"):
            buckets.append((float(s.labels["le"]), float(s.value)))
        elif s.name.endswith("_sum"):
            total = float(s.value)
        elif s.name.endswith("_count"):
            count = float(s.value)
    return Histogram(tuple(sorted(buckets)), total, count)


def parse_metrics(text: str, model: str) -> Snapshot:
    """``model``'s figures in a Prometheus text exposition (series of other models are ignored)."""
    samples = {family.name: [s for s in family.samples if s.labels.get("model") == model]
               for family in text_string_to_metric_families(text)}

    def counter(name: str, **labels: str) -> float:
        return sum(float(s.value) for s in samples.get(name, ()) if s.name == name + "_total"
                   and all(s.labels.get(k) == v for k, v in labels.items()))

    return Snapshot(counter("pdserve_requests"), _histogram(samples, "pdserve_e2e_seconds").count,
                    counter("pdserve_tokens", kind="prompt"), counter("pdserve_tokens", kind="generated"),
                    counter("pdserve_cached_tokens", source="observed"), _histogram(samples, "pdserve_ttft_seconds"),
                    _histogram(samples, "pdserve_itl_seconds"))


def window(before: Snapshot, after: Snapshot, seconds: float) -> Window | None:
    """``after - before``; None when a counter went back (the server restarted) or ``seconds <= 0``."""
    w = Window(seconds=seconds, **{f.name: getattr(after, f.name) - getattr(before, f.name) for f in fields(Snapshot)})
    counts = (w.requests, w.finished, w.prompt_tokens, w.generated_tokens, w.cached_tokens, w.ttft.count, w.itl.count)
    return w if seconds > 0 and min(counts) >= 0 else None


@dataclass(frozen=True)
class PoolView:
    """One model's pools from ``GET /admin/workers``: healthy workers, the ordered sizes (every worker but
    the draining ones, as ``POST .../scale`` counts them), workers starting or draining, and whether the
    deployment is colocated (decode workers with role ``both``)."""

    healthy: Pools
    size: Pools
    changing: int
    colocated: bool


def models_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The models a server's workers serve, sorted."""
    return sorted({str(r["model"]) for r in rows})


def pool_view(rows: Sequence[Mapping[str, Any]], model: str) -> PoolView:
    """``model``'s pools from the ``data`` rows of ``GET /admin/workers``."""
    mine = [r for r in rows if r.get("model") == model]

    def count(pool: str, *states: str) -> int:
        return sum(1 for r in mine if r.get("pool") == pool and r.get("state") in states)

    alive = ("healthy", "starting", "down")
    return PoolView(Pools(count("prefill", "healthy"), count("decode", "healthy")),
                    Pools(count("prefill", *alive), count("decode", *alive)),
                    sum(1 for r in mine if r.get("state") in ("starting", "draining")),
                    any(r.get("role") == "both" for r in mine))
