"""Metric arithmetic on hand-made timelines (bench.metrics)."""

from __future__ import annotations

import pytest

from bench import metrics
from bench.metrics import Slo, Stats
from bench.record import LoadPoint, RequestRecord, RunKey, RunResult


def rec(
    chunks: tuple[float, ...] = (0.2, 0.3, 0.4),
    e2e: float | None = 0.5,
    out: int | None = 3,
    prompt: int | None = 100,
    cached: int | None = 0,
    error: str | None = None,
    status: int | None = 200,
    **kw: object,
) -> RequestRecord:
    return RequestRecord(
        request_id=str(kw.pop("rid", "r")),
        sent_s=0.0,
        chunk_times_s=chunks,
        e2e_s=e2e,
        output_tokens=out,
        prompt_tokens=prompt,
        cached_tokens=cached,
        error=error,
        status=status,
        **kw,  # type: ignore[arg-type]
    )


def test_ttft_is_first_text_chunk_and_itl_are_chunk_gaps() -> None:
    r = rec(chunks=(0.25, 0.30, 0.42, 0.45), e2e=0.5, out=4)
    assert metrics.ttft(r) == 0.25
    assert metrics.itls(r) == pytest.approx((0.05, 0.12, 0.03))


def test_tpot_divides_decode_time_by_tokens_after_the_first() -> None:
    # 9 tokens: first at 0.2 s, stream ends at 1.0 s -> 0.8 s for 8 more tokens.
    r = rec(chunks=tuple(0.2 + 0.1 * i for i in range(9)), e2e=1.0, out=9)
    assert metrics.tpot(r) == pytest.approx(0.1)


def test_tpot_counts_usage_tokens_when_chunks_carry_several() -> None:
    # Two chunks carrying 5 tokens in all: TPOT uses the 5, ITL sees one gap.
    r = rec(chunks=(0.1, 0.5), e2e=0.5, out=5)
    assert metrics.tpot(r) == pytest.approx(0.1)
    assert metrics.itls(r) == pytest.approx((0.4,))


def test_tpot_falls_back_to_chunk_count_without_usage() -> None:
    r = rec(chunks=(0.1, 0.2, 0.3), e2e=0.3, out=None, prompt=None, cached=None)
    assert metrics.output_tokens(r) == 3
    assert metrics.tpot(r) == pytest.approx(0.1)


def test_single_token_answer_has_no_tpot_and_no_itl() -> None:
    r = rec(chunks=(0.3,), e2e=0.31, out=1)
    assert metrics.tpot(r) is None
    assert metrics.itls(r) == ()
    assert metrics.ttft(r) == 0.3


def test_failed_or_empty_request_has_no_latencies() -> None:
    r = rec(chunks=(), e2e=None, out=None, error="timeout")
    assert metrics.ttft(r) is None and metrics.tpot(r) is None and not r.ok


def test_percentile_interpolates_linearly_like_numpy() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert metrics.percentile(values, 50) == pytest.approx(50.5)
    assert metrics.percentile(values, 90) == pytest.approx(90.1)
    assert metrics.percentile(values, 99) == pytest.approx(99.01)
    assert metrics.percentile(values, 0) == 1.0 and metrics.percentile(values, 100) == 100.0
    assert metrics.percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        metrics.percentile([], 50)
    with pytest.raises(ValueError):
        metrics.percentile([1.0], 101)


def test_stats_of_values_and_of_nothing() -> None:
    s = Stats.of([1.0, 2.0, 3.0, 10.0])
    assert (s.n, s.mean, s.p50) == (4, 4.0, 2.5)
    assert Stats.of([]) == Stats(0)


def test_hit_rate_is_a_ratio_of_sums_over_successful_requests() -> None:
    records = [
        rec(prompt=100, cached=100),
        rec(prompt=900, cached=0),
        rec(prompt=1000, cached=1000, error="boom"),  # failed: ignored
    ]
    assert metrics.hit_rate(records) == pytest.approx(0.1)  # a mean of ratios would say 0.5
    assert metrics.hit_rate([rec(prompt=None, cached=None)]) is None
    assert metrics.hit_rate([rec(prompt=100, cached=None)]) is None  # server did not report cached tokens
    assert metrics.hit_rate([rec(prompt=100, cached=None), rec(prompt=100, cached=50)]) == 0.5


def test_slo_bounds_are_inclusive_and_failures_miss() -> None:
    slo = Slo(ttft_s=0.2, tpot_s=0.1)
    assert metrics.meets_slo(rec(chunks=(0.2, 0.3), e2e=0.3, out=2), slo)  # exactly on both bounds
    assert not metrics.meets_slo(rec(chunks=(0.21, 0.3), e2e=0.3, out=2), slo)  # TTFT over
    assert not metrics.meets_slo(rec(chunks=(0.1, 0.3), e2e=0.3, out=2), slo)  # TPOT 0.2 over
    assert metrics.meets_slo(rec(chunks=(0.1,), e2e=5.0, out=1), slo)  # one token: no TPOT to miss
    assert not metrics.meets_slo(rec(error="HTTP 500"), slo)
    assert metrics.meets_slo(rec(chunks=(9.0, 9.01), e2e=9.01, out=2), Slo(tpot_s=0.1))  # TPOT only


def test_attainment_counts_every_request() -> None:
    good, slow, failed = rec(chunks=(0.1, 0.2), e2e=0.2, out=2), rec(chunks=(1.0, 1.1), e2e=1.1, out=2), rec(error="x")
    assert metrics.attainment([good, good, slow, failed], Slo(ttft_s=0.5)) == 0.5
    assert metrics.attainment([good], Slo()) is None
    assert metrics.attainment([], Slo(ttft_s=1.0)) is None


def test_sweep_goodput_is_highest_rate_with_90_percent_attainment() -> None:
    points = [(1.0, 1.0), (2.0, 0.95), (4.0, 0.85), (8.0, 0.2)]
    assert metrics.sweep_goodput(points) == 2.0
    assert metrics.sweep_goodput([(1.0, 0.9), (3.0, 0.8999)]) == 1.0  # 90% itself qualifies
    assert metrics.sweep_goodput([(1.0, 0.5), (2.0, 0.1)]) is None
    assert metrics.sweep_goodput([(1.0, None)]) is None
    # Literal definition: the highest passing rate, even after a noisy dip.
    assert metrics.sweep_goodput([(1.0, 0.95), (2.0, 0.85), (4.0, 0.92)]) == 4.0
    assert metrics.sweep_goodput(points, threshold=0.99) == 1.0


def run(target: str, value: float, records: list[RequestRecord], duration: float, repeat: int = 0) -> RunResult:
    return RunResult(RunKey(target, LoadPoint("poisson", value), repeat), tuple(records), duration, len(records))


def test_summarize_throughput_latency_and_workers() -> None:
    records = [
        rec(chunks=(0.1, 0.2), e2e=0.2, out=2, prompt=10, cached=5, prefill_worker="p0", decode_worker="d0"),
        rec(chunks=(0.3, 0.4, 0.5), e2e=0.5, out=3, prompt=30, cached=0, prefill_worker="p1", decode_worker="d0"),
        rec(chunks=(), e2e=None, out=None, error="HTTP 503: busy", status=503, prefill_worker="p1"),
    ]
    s = metrics.summarize([run("a", 2.0, records, duration=2.0)], Slo(ttft_s=0.2))
    assert (s.n, s.n_ok, s.n_err) == (3, 2, 1)
    assert s.req_per_s == pytest.approx(1.0)
    assert s.output_tok_per_s == pytest.approx(2.5)
    assert s.total_tok_per_s == pytest.approx((5 + 40) / 2)
    assert s.ttft.p50 == pytest.approx(0.2) and s.ttft.n == 2
    assert s.tpot.mean == pytest.approx(0.1)
    assert s.itl.n == 3
    assert s.hit_rate == pytest.approx(5 / 40)
    assert s.slo_attainment == pytest.approx(1 / 3)
    assert s.good_req_per_s == pytest.approx(0.5)
    assert s.prefill_workers == (("p1", 2), ("p0", 1))
    assert s.decode_workers == (("d0", 2),)
    assert s.errors == (("HTTP 503: busy", 1),)


def test_summarize_merges_repeats_and_rejects_other_keys() -> None:
    one = run("a", 1.0, [rec()], duration=1.0, repeat=0)
    two = run("a", 1.0, [rec(), rec()], duration=2.0, repeat=1)
    s = metrics.summarize([one, two])
    assert (s.n, s.duration_s, s.req_per_s) == (3, 3.0, 1.0)
    with pytest.raises(ValueError):
        metrics.summarize([one, run("b", 1.0, [rec()], 1.0)])
    with pytest.raises(ValueError):
        metrics.summarize([])


def test_goodput_by_target_uses_each_targets_sweep() -> None:
    good = rec(chunks=(0.1, 0.2), e2e=0.2, out=2)
    bad = rec(chunks=(2.0, 2.1), e2e=2.1, out=2)
    results = [
        run("a", 1.0, [good] * 10, 1.0),
        run("a", 2.0, [good] * 9 + [bad], 1.0),
        run("b", 1.0, [good] * 10, 1.0),
        run("b", 2.0, [good] * 8 + [bad] * 2, 1.0),
    ]
    summaries = metrics.summarize_all(results, Slo(ttft_s=0.5))
    assert [s.target for s in summaries] == ["a", "a", "b", "b"]
    assert metrics.goodput_by_target(summaries) == {"a": 2.0, "b": 1.0}
