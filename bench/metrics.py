"""Pure metric arithmetic on ``RequestRecord`` timelines: no I/O, no clocks.

Definitions (all per request, seconds):
* TTFT  = arrival of the first chunk carrying generated text (``chunk_times_s[0]``).
* ITL   = gaps between consecutive text-carrying chunks; a chunk may carry several tokens, so ITL is
          per chunk, not per token.
* TPOT  = (E2E - TTFT) / (output tokens - 1), with output tokens from ``usage`` (or the chunk count if
          the server sent no usage); undefined (``None``) for a single-token answer.
* E2E   = from sending to the end of the stream.

Run level: percentiles use linear interpolation between closest ranks (numpy's default); hit rate is
a ratio of sums (cached prompt tokens / prompt tokens over successful requests); throughput divides by
the run's wall duration. SLO attainment is the fraction of *all* requests (failures count as misses)
meeting every SLO given. Sweep goodput follows DistServe (Zhong et al., "DistServe: Disaggregating
Prefill and Decoding for Goodput-optimized Large Language Model Serving", OSDI 2024): the highest
request rate at which at least 90% of requests meet both the TTFT and the TPOT SLO.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.record import RequestRecord, RunResult

GOODPUT_ATTAINMENT = 0.9


def ttft(rec: RequestRecord) -> float | None:
    return rec.chunk_times_s[0] if rec.chunk_times_s else None


def itls(rec: RequestRecord) -> tuple[float, ...]:
    return tuple(b - a for a, b in itertools.pairwise(rec.chunk_times_s))


def output_tokens(rec: RequestRecord) -> int:
    """Tokens generated: ``usage.completion_tokens`` if reported, else the number of text chunks."""
    return rec.output_tokens if rec.output_tokens is not None else len(rec.chunk_times_s)


def tpot(rec: RequestRecord) -> float | None:
    first, n = ttft(rec), output_tokens(rec)
    if first is None or rec.e2e_s is None or n < 2:
        return None
    return (rec.e2e_s - first) / (n - 1)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation. ``values`` must be non-empty."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class Stats:
    """Distribution summary of one latency (seconds); fields are ``None`` when ``n`` is 0."""

    n: int
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None

    @classmethod
    def of(cls, values: Iterable[float]) -> Stats:
        xs = list(values)
        if not xs:
            return cls(0)
        return cls(len(xs), sum(xs) / len(xs), percentile(xs, 50), percentile(xs, 90), percentile(xs, 99))


@dataclass(frozen=True)
class Slo:
    """Latency objectives in seconds; ``None`` means no objective on that metric."""

    ttft_s: float | None = None
    tpot_s: float | None = None

    @property
    def active(self) -> bool:
        return self.ttft_s is not None or self.tpot_s is not None


def meets_slo(rec: RequestRecord, slo: Slo) -> bool:
    """A successful request within every objective (a one-token answer has no TPOT and passes it)."""
    if not rec.ok:
        return False
    first, per_token = ttft(rec), tpot(rec)
    if slo.ttft_s is not None and (first is None or first > slo.ttft_s):
        return False
    return slo.tpot_s is None or per_token is None or per_token <= slo.tpot_s


def attainment(records: Sequence[RequestRecord], slo: Slo) -> float | None:
    """Fraction of all ``records`` meeting ``slo``; ``None`` without records or without objectives."""
    if not records or not slo.active:
        return None
    return sum(meets_slo(r, slo) for r in records) / len(records)


def sweep_goodput(points: Iterable[tuple[float, float | None]], threshold: float = GOODPUT_ATTAINMENT) -> float | None:
    """DistServe goodput of a sweep: the highest load (request rate) among ``(load, attainment)`` points
    whose attainment is at least ``threshold``; ``None`` if no point qualifies."""
    passing = [load for load, att in points if att is not None and att >= threshold]
    return max(passing) if passing else None


def hit_rate(records: Iterable[RequestRecord]) -> float | None:
    """Cached prompt tokens / prompt tokens, summed over successful requests whose usage reported
    cached tokens; ``None`` when none did (vLLM needs ``--enable-prompt-tokens-details``)."""
    cached = prompt = 0
    for r in records:
        if r.ok and r.prompt_tokens and r.cached_tokens is not None:
            prompt += r.prompt_tokens
            cached += r.cached_tokens
    return cached / prompt if prompt else None


@dataclass(frozen=True)
class RunSummary:
    """Everything reported about one (target, load point), merged over repeats."""

    target: str
    load_kind: str
    load_value: float
    n: int
    n_ok: int
    duration_s: float
    req_per_s: float
    output_tok_per_s: float
    total_tok_per_s: float
    ttft: Stats
    tpot: Stats
    itl: Stats
    e2e: Stats
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    hit_rate: float | None
    slo_attainment: float | None
    good_req_per_s: float | None
    prefill_workers: tuple[tuple[str, int], ...]
    decode_workers: tuple[tuple[str, int], ...]
    route_reasons: tuple[tuple[str, int], ...]
    errors: tuple[tuple[str, int], ...]

    @property
    def n_err(self) -> int:
        return self.n - self.n_ok


def _counts(values: Iterable[str | None]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(Counter(v for v in values if v is not None).items(), key=lambda kv: (-kv[1], kv[0])))


def summarize(results: Sequence[RunResult], slo: Slo = Slo()) -> RunSummary:
    """Merge the runs of one (target, load point) (e.g. several repeats) into one summary."""
    if not results:
        raise ValueError("summarize needs at least one run")
    key = results[0].key
    if any((r.key.target, r.key.load) != (key.target, key.load) for r in results):
        raise ValueError("summarize merges runs of one target and load point only")
    recs = [rec for r in results for rec in r.records]
    ok = [r for r in recs if r.ok]
    duration = sum(r.duration_s for r in results)
    out_tok = sum(output_tokens(r) for r in ok)
    prompt_tok = sum(r.prompt_tokens or 0 for r in ok)
    cached_tok = sum(r.cached_tokens or 0 for r in ok)
    att = attainment(recs, slo)
    rate = (lambda x: x / duration) if duration > 0 else (lambda x: 0.0)
    return RunSummary(
        target=key.target,
        load_kind=key.load.kind,
        load_value=key.load.value,
        n=len(recs),
        n_ok=len(ok),
        duration_s=duration,
        req_per_s=rate(len(ok)),
        output_tok_per_s=rate(out_tok),
        total_tok_per_s=rate(out_tok + prompt_tok),
        ttft=Stats.of(t for r in ok if (t := ttft(r)) is not None),
        tpot=Stats.of(t for r in ok if (t := tpot(r)) is not None),
        itl=Stats.of(gap for r in ok for gap in itls(r)),
        e2e=Stats.of(r.e2e_s for r in ok if r.e2e_s is not None),
        prompt_tokens=prompt_tok,
        cached_tokens=cached_tok,
        output_tokens=out_tok,
        hit_rate=hit_rate(ok),
        slo_attainment=att,
        good_req_per_s=None if att is None else rate(sum(meets_slo(r, slo) for r in recs)),
        prefill_workers=_counts(r.prefill_worker for r in recs),
        decode_workers=_counts(r.decode_worker for r in recs),
        route_reasons=_counts(r.route_reason for r in recs),
        errors=_counts((r.error or "")[:120] if not r.ok else None for r in recs),
    )


def summarize_all(results: Sequence[RunResult], slo: Slo = Slo()) -> list[RunSummary]:
    """One summary per (target, load point), in order of first appearance in ``results``."""
    groups: dict[tuple[str, object], list[RunResult]] = {}
    for r in results:
        groups.setdefault((r.key.target, r.key.load), []).append(r)
    return [summarize(g, slo) for g in groups.values()]


def goodput_by_target(
    summaries: Sequence[RunSummary], threshold: float = GOODPUT_ATTAINMENT
) -> dict[str, float | None]:
    """``sweep_goodput`` per target over its load points (meaningful for ``poisson`` sweeps)."""
    points: dict[str, list[tuple[float, float | None]]] = {}
    for s in summaries:
        points.setdefault(s.target, []).append((s.load_value, s.slo_attainment))
    return {target: sweep_goodput(p, threshold) for target, p in points.items()}
