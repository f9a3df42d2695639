"""``pdserve autoscale``: the pure sizing (``bench.planner.sla``) and control step (``bench.planner.control``),
the parsing of pdserve's own /metrics exposition (``bench.planner.observe``), and the HTTP edge against a fake
server (``bench.planner.autoscale``, httpx MockTransport): the exact scale POSTs with --apply, none without."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import httpx
import pytest

from bench.planner import autoscale
from bench.planner.control import Corrections, Limits, Observed, Settings, State, corrected, decide, limit
from bench.planner.observe import Histogram, parse_metrics, pool_view, window
from bench.planner.sla import Load, Pools, Slo, decode_needed, max_decode_batch, predict, prefill_needed
from orchestrator.metrics import MetricFamilies, Metrics
from protocol.sim_profile import SimProfile, read_profile

H100 = SimProfile.model_validate(read_profile("llama-3.1-8b-h100"))
SLO = Slo(ttft_s=0.3, itl_s=0.025)


def observed(rate: float = 200 / 30, prompt: float = 4000, output: float = 128, ttft: float | None = None,
             itl: float | None = None, now: Pools = Pools(2, 6), requests: int = 200, changing: int = 0) -> Observed:
    return Observed(30.0, requests, Load(rate, prompt, 0, output), ttft, itl, now, now, changing)


def settings(**limits: Any) -> Settings:
    return Settings(SLO, Limits(**{"max_step": 100, **limits}), smoothing=0.5, min_requests=20)


# --------------------------------------------------------------------------- sizing
def test_more_load_needs_more_prefill_when_ttft_is_the_bound() -> None:
    light, _ = decide(H100, observed(rate=2.0), State(), settings())
    heavy, _ = decide(H100, observed(rate=8.0), State(), settings())
    assert light.sized is not None and heavy.sized is not None
    assert heavy.sized.prefill > light.sized.prefill >= 1
    assert heavy.needed[0] == pytest.approx(4 * light.needed[0])  # same latency headroom, 4x the work


def test_longer_outputs_need_more_decode_and_no_more_prefill() -> None:
    short, _ = decide(H100, observed(rate=40, prompt=500, output=64), State(), settings())
    long, _ = decide(H100, observed(rate=40, prompt=500, output=1024), State(), settings())
    assert short.sized is not None and long.sized is not None
    assert long.sized.decode > short.sized.decode
    assert long.sized.prefill == short.sized.prefill


def test_decode_seats_meet_the_itl_slo_and_shrink_as_the_correction_grows() -> None:
    b = max_decode_batch(H100, 1000, 1200, 1.0, SLO.itl_s)
    b2 = max_decode_batch(H100, 1000, 1200, 2.0, SLO.itl_s)
    assert b is not None and b2 is not None and b2 < b <= H100.max_num_seqs
    assert max_decode_batch(H100, 1000, 1200, 10.0, SLO.itl_s) is None  # 10 x 6 ms > 25 ms: not even one
    need, note = decode_needed(H100, Load(10, 1000, 0, 400), 10.0, SLO.itl_s)
    assert note is not None and "ITL SLO out of reach" in note and need > 0


def test_a_correction_above_one_raises_the_target() -> None:
    load = Load(200 / 30, 4000, 0, 128)
    assert prefill_needed(H100, load, 1.5, SLO.ttft_s)[0] > prefill_needed(H100, load, 1.0, SLO.ttft_s)[0]
    assert decode_needed(H100, load, 1.5, SLO.itl_s)[0] > decode_needed(H100, load, 1.0, SLO.itl_s)[0]
    base, _ = decide(H100, observed(), State(), settings())
    slow, _ = decide(H100, observed(), State(Corrections(1.6, 1.6)), settings())
    assert base.sized is not None and slow.sized is not None
    assert slow.sized.prefill > base.sized.prefill and slow.sized.decode >= base.sized.decode


def test_corrections_are_observed_over_predicted_smoothed_and_bounded() -> None:
    obs = observed(ttft=0.5, itl=0.010)
    pred = predict(H100, obs.load, obs.itl_s, obs.healthy)
    assert pred.ttft_s is not None and pred.prefill_utilisation is not None and pred.prefill_utilisation < 1
    d, state = decide(H100, obs, State(), settings())
    assert d.corrections.prefill == pytest.approx(0.5 / pred.ttft_s)
    assert d.corrections.decode == pytest.approx(0.010 / pred.itl_s)
    d2, _ = decide(H100, replace(obs, ttft_s=pred.ttft_s), state, settings())  # now exactly as predicted
    assert d2.corrections.prefill == pytest.approx(0.5 * (0.5 / pred.ttft_s) + 0.5 * 1.0)
    assert corrected(None, 100.0, 1.0, 0.5) == 5.0 and corrected(None, 0.001, 1.0, 0.5) == 0.2
    assert corrected(2.0, None, 1.0, 0.5) == 2.0


def test_an_overloaded_prefill_prediction_leaves_its_correction_alone() -> None:
    obs = observed(rate=20.0, ttft=5.0, itl=0.010, now=Pools(1, 6))  # utilisation 2.8 on one worker
    d, _ = decide(H100, obs, State(Corrections(1.3, None)), settings())
    assert d.prediction is not None and d.prediction.ttft_s is None
    assert d.corrections.prefill == 1.3 and any("overloaded" in n for n in d.notes)


def test_skips_an_interval_with_few_requests_or_a_change_in_progress() -> None:
    few, state = decide(H100, observed(requests=5, ttft=9.0), State(Corrections(1.2, 1.1), (1, 0)), settings())
    assert few.skipped is not None and "5 requests" in few.skipped and few.target == few.current
    assert state == State(Corrections(1.2, 1.1), (0, 0))  # corrections kept, hysteresis reset
    busy, _ = decide(H100, observed(changing=2), State(), settings())
    assert busy.skipped is not None and "in progress" in busy.skipped and not busy.changes


# --------------------------------------------------------------------------- limits
def test_limits_clamp_each_pool_then_fit_the_worker_cap() -> None:
    lim = Limits(min_prefill=1, max_prefill=6, min_decode=2, max_decode=10, max_step=100)
    target, _, notes = limit(Pools(9, 1), Pools(3, 5), lim, (0, 0))
    assert target == Pools(6, 2) and any("clamped" in n for n in notes)
    capped, _, _ = limit(Pools(6, 10), Pools(1, 2), replace(lim, max_workers=8), (0, 0))
    assert capped.total == 8 and capped == Pools(3, 5)  # 6:10 scaled to 8 workers


def test_max_step_bounds_each_pools_move() -> None:
    target, _, notes = limit(Pools(10, 1), Pools(2, 8), Limits(max_step=2), (0, 0))
    assert target == Pools(4, 6) and sum("--max-step" in n for n in notes) == 2


def test_hysteresis_holds_a_one_worker_change_until_asked_twice() -> None:
    lim = Limits(max_step=2)
    first, pending, _ = limit(Pools(3, 6), Pools(2, 6), lim, (0, 0))
    assert first == Pools(2, 6) and pending == (1, 0)
    second, pending, _ = limit(Pools(3, 6), Pools(2, 6), lim, pending)
    assert second == Pools(3, 6) and pending == (0, 0)
    flip, pending, _ = limit(Pools(1, 6), Pools(2, 6), lim, (1, 0))  # the other way: held again
    assert flip == Pools(2, 6) and pending == (-1, 0)
    big, _, _ = limit(Pools(4, 6), Pools(2, 6), lim, (0, 0))  # two or more workers: at once
    assert big == Pools(4, 6)


def test_growth_never_passes_the_worker_cap_while_the_other_pool_is_held() -> None:
    target, _, _ = limit(Pools(4, 4), Pools(2, 5), Limits(max_workers=8, max_step=2), (0, 0))
    assert target.total <= 8 and target == Pools(3, 5)  # decode -1 held, so prefill gets +1 only


# --------------------------------------------------------------------------- /metrics and /admin/workers
def families_with_traffic(n: int, ttft: float, itl: float, prompt: int = 4000, output: int = 128,
                          cached: int = 0) -> tuple[str, str]:
    """pdserve's own exposition before and after ``n`` requests of model "a" (model "b" gets noise)."""
    fam = MetricFamilies()
    a, b = Metrics("a", fam), Metrics("b", fam)
    a.requests.labels("chat_completions", "200").inc(7)
    a.ttft.observe(9.0)
    before = fam.exposition().decode()
    for _ in range(n):
        a.requests.labels("chat_completions", "200").inc()
        a.ttft.observe(ttft)
        for _ in range(output - 1):
            a.itl.observe(itl)
        a.e2e.observe(ttft + itl * (output - 1))
        a.tokens.labels("prompt").inc(prompt)
        a.tokens.labels("generated").inc(output)
        a.cached_tokens.labels("observed").inc(cached)
        b.requests.labels("completions", "502").inc(5)
        b.ttft.observe(60.0)
    return before, fam.exposition().decode()


def test_window_of_two_scrapes_gives_one_models_rate_means_and_latencies() -> None:
    before, after = families_with_traffic(40, ttft=0.2, itl=0.004, prompt=1000, output=50, cached=600)
    w = window(parse_metrics(before, "a"), parse_metrics(after, "a"), 10.0)
    assert w is not None and w.requests == 40 and w.finished == 40
    load = w.load()
    assert load.rate == pytest.approx(4.0) and load.prompt_tokens == pytest.approx(1000)
    assert load.cached_tokens == pytest.approx(600) and load.uncached_tokens == pytest.approx(400)
    assert load.output_tokens == pytest.approx(50)
    assert w.ttft.count == 40 and w.ttft.mean() == pytest.approx(0.2)  # the earlier 9 s TTFT is not in it
    assert w.itl.stat("mean") == pytest.approx(0.004)
    assert 0.1 < (w.ttft.stat("p50") or 0) <= 0.25  # inside the (0.1, 0.25] bucket
    assert window(parse_metrics(after, "a"), parse_metrics(before, "a"), 10.0) is None  # counters went back


def test_histogram_quantile_interpolates_inside_buckets_like_promql() -> None:
    h = Histogram(((0.1, 10.0), (0.2, 30.0), (float("inf"), 40.0)), total=5.0, count=40.0)
    assert h.quantile(0.5) == pytest.approx(0.15)  # rank 20: halfway through (0.1, 0.2]
    assert h.quantile(0.125) == pytest.approx(0.05)
    assert h.quantile(0.99) == pytest.approx(0.2)  # in +Inf: the highest finite bound
    assert Histogram().quantile(0.5) is None and Histogram().mean() is None


def rows(prefill: list[str], decode: list[str], model: str = "a", role: str = "decode") -> list[dict[str, Any]]:
    out = [{"id": f"{model}.prefill-{i}", "model": model, "pool": "prefill", "role": "prefill", "state": s}
           for i, s in enumerate(prefill)]
    out += [{"id": f"{model}.decode-{i}", "model": model, "pool": "decode", "role": role, "state": s}
            for i, s in enumerate(decode)]
    return out


def test_pool_view_counts_healthy_ordered_and_changing_workers() -> None:
    view = pool_view(rows(["healthy", "starting"], ["healthy", "down", "draining"]) + rows(["healthy"], [], "b"), "a")
    assert view.healthy == Pools(1, 1) and view.size == Pools(2, 2) and view.changing == 2
    assert not view.colocated and pool_view(rows([], ["healthy"], role="both"), "a").colocated


# --------------------------------------------------------------------------- the HTTP edge
class FakeServer:
    """/metrics: the scrapes in order (the last repeats); /admin/workers: fixed rows; records every request."""

    def __init__(self, scrapes: list[str], workers: list[dict[str, Any]]) -> None:
        self.scrapes, self.workers = scrapes, workers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/metrics":
            return httpx.Response(200, text=self.scrapes.pop(0) if len(self.scrapes) > 1 else self.scrapes[0])
        if request.url.path == "/admin/workers":
            return httpx.Response(200, json={"object": "list", "data": self.workers})
        pool = request.url.path.split("/")[3]
        return httpx.Response(202, json={"pool": pool, "replicas": json.loads(request.content)["replicas"],
                                         "adding": [], "draining": []})

    def posts(self) -> list[tuple[str, dict[str, Any]]]:
        return [(r.url.path, json.loads(r.content)) for r in self.requests if r.method == "POST"]


def run_against(server: FakeServer, *flags: str) -> int:
    ticks = iter(float(30 * k) for k in range(100))
    argv = ["--url", "http://pd", "--api-key", "sk-admin", "--slo-ttft-ms", "300", "--slo-itl-ms", "25",
            "--interval", "30", *flags]
    return autoscale.main(argv, transport=httpx.MockTransport(server), clock=lambda: next(ticks),
                          sleep=lambda s: None)


def test_apply_posts_the_orders_shrinking_first_under_a_worker_cap(capsys: pytest.CaptureFixture[str]) -> None:
    before, after = families_with_traffic(200, ttft=0.5, itl=0.010)  # 6.7 req/s of 4000-token prompts
    server = FakeServer([before, after], rows(["healthy"] * 2, ["healthy"] * 6))
    assert run_against(server, "--once", "--apply", "--max-workers", "8") == 0
    assert server.posts() == [("/admin/pools/decode/scale", {"replicas": 4}),
                              ("/admin/pools/prefill/scale", {"replicas": 4})]
    assert all(r.headers["authorization"] == "Bearer sk-admin" for r in server.requests)
    out = capsys.readouterr().out
    assert "target 4P:4D" in out and "pdserve scale decode 4" in out


def test_dry_run_is_the_default_and_posts_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    before, after = families_with_traffic(200, ttft=0.5, itl=0.010)
    server = FakeServer([before, after], rows(["healthy"] * 2, ["healthy"] * 6))
    assert run_against(server, "--max-intervals", "2", "--max-workers", "8") == 0
    assert server.posts() == []
    out = capsys.readouterr().out
    assert out.count("pdserve scale prefill 4    (dry run") == 1  # second interval: no new requests, skipped
    assert "skipped: 0 requests" in out


def test_several_models_need_model_and_it_is_sent_with_the_order(capsys: pytest.CaptureFixture[str]) -> None:
    before, after = families_with_traffic(200, ttft=0.5, itl=0.010)
    both = rows(["healthy"] * 2, ["healthy"] * 6) + rows(["healthy"], ["healthy"], "b")
    assert run_against(FakeServer([before, after], both), "--once") == 2
    assert "--model must name one of" in capsys.readouterr().err
    server = FakeServer([before, after], both)
    assert run_against(server, "--once", "--apply", "--model", "a") == 0
    assert {body["model"] for _, body in server.posts()} == {"a"} and len(server.posts()) == 2


def test_pdserve_autoscale_hands_every_argument_to_the_planner_module(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from orchestrator import cli

    calls: list[list[str]] = []

    def call(argv: list[str]) -> int:
        calls.append(argv)
        return 0

    monkeypatch.setattr(subprocess, "call", call)
    assert cli.main(["autoscale", "--slo-ttft-ms", "300", "--apply"]) == 0
    assert calls[0][1:] == ["-m", "bench.planner.autoscale", "--slo-ttft-ms", "300", "--apply"]
