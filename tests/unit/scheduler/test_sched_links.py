"""The measured link table: priors, the smoothed fit of each pair, lookups either way round, frozen
snapshots, and the decode scorer pricing transfers with what was measured."""

from __future__ import annotations

import pytest
from sched_helpers import request, route

from orchestrator.scheduler.link_meter import LinkFit, MeasuredLinks
from orchestrator.scheduler.links import LinkEstimate, LinkTable
from orchestrator.scheduler.plugin import PluginEnv
from orchestrator.scheduler.request import WorkerState
from orchestrator.scheduler.router import Router

PRIORS = LinkTable(same_host_bytes_per_s=100e9, cross_host_bytes_per_s=10e9, latency_s=0.001,
                   links=(("p", "slow", 1e9),))
NO_LATENCY = LinkTable(cross_host_bytes_per_s=10e9)
GB = 1_000_000_000


def test_priors_until_a_pair_is_measured() -> None:
    links = MeasuredLinks(PRIORS)
    table = links.snapshot()
    assert table.estimate("p", "p") == LinkEstimate(100e9, 0.001)
    assert table.estimate("p", "d") == LinkEstimate(10e9, 0.001)
    assert table.estimate("slow", "p") == LinkEstimate(1e9, 0.001)  # a configured link, either way round
    assert links.estimates() == {}
    assert table.transfer_seconds(GB, "p", "d") == pytest.approx(0.101)


def test_the_first_pull_replaces_the_prior_then_alpha_smooths() -> None:
    fit = LinkFit(LinkEstimate(10e9, 0.0), alpha=0.5)
    assert fit.observe(GB, 1.0) == LinkEstimate(1e9, 0.0, 1)
    # Same size again, twice as fast: EW means of bytes (1 GB) and seconds (0.75 s) -> 1.333 GB/s.
    est = fit.observe(GB, 0.5)
    assert est.samples == 2 and est.bandwidth_bytes_per_s == pytest.approx(GB / 0.75)
    for _ in range(30):
        est = fit.observe(GB, 0.5)
    assert est.bandwidth_bytes_per_s == pytest.approx(2e9, rel=1e-6)


def test_equal_sizes_keep_the_prior_latency() -> None:
    fit = LinkFit(LinkEstimate(10e9, latency_s=0.01))
    for _ in range(5):
        est = fit.observe(GB, 0.11)
    assert est.latency_s == 0.01 and est.bandwidth_bytes_per_s == pytest.approx(1e10)


def test_pulls_of_several_sizes_separate_latency_from_bandwidth() -> None:
    fit = LinkFit(LinkEstimate(10e9, 0.0), alpha=0.3)
    for size in (1e6, 5e8, 2e7, 1e9, 3e8, 7e8):
        est = fit.observe(int(size), 0.002 + size / 4e9)
    assert est.latency_s == pytest.approx(0.002, rel=1e-6)
    assert est.bandwidth_bytes_per_s == pytest.approx(4e9, rel=1e-6)


def test_a_latency_never_swallows_the_pull() -> None:
    """A prior latency above the measured times would make the bandwidth negative: it is capped at half
    the mean pull time."""
    est = LinkFit(LinkEstimate(1e9, latency_s=5.0)).observe(GB, 1.0)
    assert est.latency_s == 0.5 and est.bandwidth_bytes_per_s == pytest.approx(2e9)


def test_empty_pulls_say_nothing() -> None:
    links = MeasuredLinks(PRIORS)
    assert links.observe("p", "d", 0, 0.5) == PRIORS.estimate("p", "d")
    assert links.observe("p", "d", 10, 0.0) == PRIORS.estimate("p", "d")
    assert links.estimates() == {}


def test_pairs_are_measured_apart_and_looked_up_either_way_round() -> None:
    links = MeasuredLinks(NO_LATENCY)
    links.observe("p1", "d1", GB, 1.0)
    links.observe("p1", "d2", GB, 0.25)
    table = links.snapshot()
    assert table.bandwidth("p1", "d1") == pytest.approx(1e9)
    assert table.bandwidth("p1", "d2") == pytest.approx(4e9)
    assert table.bandwidth("d1", "p1") == pytest.approx(1e9)  # the reverse direction, until measured
    assert table.bandwidth("p2", "d1") == 10e9  # another source: still the prior
    links.observe("d1", "p1", GB, 0.5)
    table = links.snapshot()
    assert table.bandwidth("d1", "p1") == pytest.approx(2e9) and table.bandwidth("p1", "d1") == pytest.approx(1e9)


def test_a_snapshot_is_frozen() -> None:
    links = MeasuredLinks(NO_LATENCY)
    links.observe("p", "d", GB, 1.0)
    before = links.snapshot()
    assert links.snapshot() is before  # reused until the next pull
    links.observe("p", "d", GB, 0.1)
    after = links.snapshot()
    assert before.bandwidth("p", "d") == pytest.approx(1e9) and after.bandwidth("p", "d") > 1e9
    with pytest.raises(TypeError):
        before.measured[("p", "d")] = LinkEstimate(1.0)  # type: ignore[index]


DECODE = {"name": "t", "scorers": [{"name": "transfer_cost"}]}
WORKERS = (WorkerState("near", host="d-near"), WorkerState("far", host="d-far"))
# The configured priors favour "far"; the measurements say otherwise.
FAVOUR_FAR = LinkTable(cross_host_bytes_per_s=10e9, links=(("p", "d-far", 50e9),))


def test_transfer_cost_reads_the_measured_snapshot_of_the_request() -> None:
    links = MeasuredLinks(FAVOUR_FAR)
    req = request(source_host="p", kv_bytes_per_token=1 << 20)
    env = PluginEnv(links=links.priors)
    assert route(DECODE, WORKERS, req=req, env=env).worker_id == "far"
    links.observe("p", "d-far", GB, 1.0)
    links.observe("p", "d-near", GB, 0.1)
    assert route(DECODE, WORKERS, req=req, env=env).worker_id == "far"  # no snapshot: the priors
    measured = request(source_host="p", kv_bytes_per_token=1 << 20, links=links.snapshot())
    assert route(DECODE, WORKERS, req=measured, env=env).worker_id == "near"


def test_the_router_hands_the_snapshot_to_decode_placement() -> None:
    from orchestrator.scheduler.prefix_index import PrefixIndex
    from orchestrator.scheduler.profiles import PoolProfile, build_pipeline

    pipeline = build_pipeline(PoolProfile.model_validate(DECODE), PluginEnv(links=FAVOUR_FAR))
    router = Router(model="m", block_size=16, index=PrefixIndex("m", 16), prefill=pipeline, decode=pipeline)
    links = MeasuredLinks(FAVOUR_FAR)
    links.observe("p", "d-near", GB, 0.01)
    links.observe("p", "d-far", GB, 1.0)
    req = request(kv_bytes_per_token=1 << 20)
    assert router.route_decode(req, WORKERS, source_host="p").worker_id == "far"
    assert router.route_decode(req, WORKERS, source_host="p", links=links.snapshot()).worker_id == "near"
