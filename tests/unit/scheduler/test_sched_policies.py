"""Conditional disaggregation, link table, hash ring, and the Router facade."""

from __future__ import annotations

import pytest
from sched_helpers import request

from orchestrator.scheduler.approx_index import ApproxPrefixIndex
from orchestrator.scheduler.decision import Decision
from orchestrator.scheduler.disagg_policy import DisaggPolicy
from orchestrator.scheduler.hashing import block_hash_list, make_salt
from orchestrator.scheduler.links import LinkTable
from orchestrator.scheduler.prefix_index import PrefixIndex
from orchestrator.scheduler.profiles import PRESETS, build_pipeline
from orchestrator.scheduler.request import WorkerState as W
from orchestrator.scheduler.router import Router
from orchestrator.scheduler.session_ring import HashRing, bounded_load_choice
from protocol.types import BlockStored, KvEventBatch

FULL = W("p", waiting=3, queue_bound=3)
ROOM = W("p", queue_bound=3)
DISAGG_TABLE = [
    # (blocks of 16, index match, prefill workers, decode workers, local candidate, mode, reason)
    ("short prompt", 8, {}, [ROOM], [W("d")], "d", "local", "short_prompt"),
    ("long prompt", 64, {}, [ROOM], [W("d")], "d", "remote", "disaggregated"),
    ("cached on the local decode worker -> short", 64, {"d": 60}, [ROOM], [W("d")], "d", "local", "short_prompt"),
    ("cached on the prefill worker only -> remote", 64, {"p": 60}, [ROOM], [W("d")], "d", "remote",
     "disaggregated"),
    ("cached on another decode worker -> remote", 64, {"e": 60}, [ROOM], [W("d"), W("e")], "d", "remote",
     "disaggregated"),
    ("no local candidate -> remote", 8, {}, [ROOM], [W("d")], None, "remote", "disaggregated"),
    ("prefill saturated, decode has room", 64, {}, [FULL], [W("d", queue_bound=2)], "d", "local",
     "prefill_saturated"),
    ("both saturated -> remote", 64, {}, [FULL], [W("d", waiting=2, queue_bound=2)], "d", "remote",
     "disaggregated"),
    ("no healthy prefill", 64, {}, [W("p", healthy=False)], [W("d")], "d", "local", "prefill_saturated"),
]


@pytest.mark.parametrize(("case", "blocks", "match", "prefill", "decode", "local", "mode", "reason"), DISAGG_TABLE,
                         ids=[r[0] for r in DISAGG_TABLE])
def test_disagg_table(case, blocks, match, prefill, decode, local, mode, reason) -> None:  # type: ignore[no-untyped-def]
    cand = Decision(local, match.get(local, 0), "least_loaded") if local else None
    decision = DisaggPolicy(min_remote_tokens=256).decide(request(blocks=blocks), match, prefill, decode, cand)
    assert (decision.mode, decision.reason) == (mode, reason)
    assert decision.remote_uncached_tokens == blocks * 16 - 16 * match.get("p", 0)
    assert decision.local == (cand if mode == "local" else None)
    if cand is not None:
        assert decision.local_uncached_tokens == blocks * 16 - 16 * cand.matched_blocks
    if mode == "local":
        assert decision.uncached_tokens == decision.local_uncached_tokens


def test_disagg_rule_can_be_disabled() -> None:
    policy = DisaggPolicy(min_remote_tokens=0, local_when_prefill_saturated=False)
    assert not policy.local_possible(request(blocks=1), {}, [FULL], [W("d")])
    assert policy.decide(request(blocks=1), {}, [FULL], [W("d")], Decision("d", 0, "x")).mode == "remote"


def test_link_table() -> None:
    table = LinkTable(same_host_bytes_per_s=100, cross_host_bytes_per_s=10, links=(("a", "b", 50),))
    assert table.bandwidth("x", "x") == 100 and table.bandwidth("x", "y") == 10
    assert table.bandwidth("a", "b") == 50 == table.bandwidth("b", "a")
    assert table.transfer_seconds(100, "a", "b") == 2
    with pytest.raises(ValueError):
        LinkTable(cross_host_bytes_per_s=0)


def test_ring_moves_only_the_removed_workers_keys() -> None:
    ids = ["w0", "w1", "w2", "w3", "w4"]
    keys = [f"s{i}" for i in range(300)]
    before = {k: next(HashRing(ids).walk(k)) for k in keys}
    after = {k: next(HashRing(ids[:-1]).walk(k)) for k in keys}
    assert all(after[k] == before[k] for k in keys if before[k] != "w4")
    assert sum(before[k] == "w4" for k in keys) > 20  # and w4 had its share
    loads = dict.fromkeys(ids, 0) | {"w0": 40}
    assert all(bounded_load_choice(HashRing(ids), k, loads, 1.25) != "w0" for k in keys)


def _stored(tokens: list[int], engine_hashes: tuple[int, ...]) -> KvEventBatch:
    return KvEventBatch(0, 0.0, (BlockStored(engine_hashes, None, tuple(tokens), 4),))


def test_router_routes_prefill_to_the_cached_worker_and_decode_by_load_then_link() -> None:
    index = PrefixIndex("m", 4)
    router = Router(model="m", block_size=4, index=index, prefill=build_pipeline(PRESETS["kv_aware"]),
                    decode=build_pipeline(PRESETS["decode"]))
    index.apply("p1", _stored(list(range(12)), (1, 2, 3)))
    req = router.make_request(list(range(14)), session_key="s", kv_bytes_per_token=1000)
    assert req.block_hashes == tuple(block_hash_list(list(range(14)), 4, make_salt("m", None)))
    prefill = [W("p0", host="h0"), W("p1", host="h1")]
    assert router.route_prefill(req, prefill).worker_id == "p1"
    assert router.plan(req, prefill, []).reason == "disaggregated"  # no decode worker to prefill it locally
    assert router.plan(req, prefill, [W("d0")]).reason == "short_prompt"  # 14 uncached tokens there
    decode = [W("d0", host="h0"), W("d1", host="h1")]
    assert router.route_decode(req, decode, source_host="h1").worker_id == "d1"
    busy = [W("d0", host="h0"), W("d1", host="h1", running=8, kv_usage=0.5)]
    assert router.route_decode(req, busy, source_host="h1").worker_id == "d0"
    salted = router.make_request(list(range(14)), cache_salt="tenant")
    assert router.match(salted) == {}


def test_router_with_approx_index_learns_from_its_own_routes() -> None:
    router = Router(model="m", block_size=4, index=ApproxPrefixIndex(100, 60.0),
                    prefill=build_pipeline(PRESETS["prefix"]), decode=build_pipeline(PRESETS["decode"]))
    workers = [W("a"), W("b", running=1)]
    req = router.make_request(list(range(32)))
    assert router.route_prefill(req, workers, now=0.0).reason == "prefix_miss"
    again = router.route_prefill(router.make_request(list(range(40))), [W("a", running=5), W("b")], now=1.0)
    assert (again.worker_id, again.matched_blocks, again.reason) == ("a", 8, "prefix_hit")
    assert router.route_prefill(req, [W("a", running=5), W("b")], now=100.0).reason == "prefix_miss"
