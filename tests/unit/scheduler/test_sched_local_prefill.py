"""Local or remote prefill, each priced with the cache it would use (``Router.plan``): the decode worker a
local prefill would run on is chosen prefix-aware and its *own* cached prefix decides ``short_prompt``."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.scheduler.decision import Decision
from orchestrator.scheduler.disagg_policy import DisaggPolicy
from orchestrator.scheduler.plugin import PluginEnv
from orchestrator.scheduler.prefix_index import PrefixIndex
from orchestrator.scheduler.profiles import build_pipeline, preset
from orchestrator.scheduler.request import WorkerState as W
from orchestrator.scheduler.router import Router
from protocol.types import BlockStored, KvEventBatch

BS = 16
PROMPT = list(range(1000, 1000 + 6160))  # 385 blocks of 16 tokens
CACHED = PROMPT[:6144]  # 384 blocks: all but the last 16 tokens


def router(decode: str = "decode", min_remote_tokens: int = 256) -> tuple[Router, PrefixIndex]:
    index = PrefixIndex("m", BS)
    env = PluginEnv(seed=1)
    return Router(model="m", block_size=BS, index=index, prefill=build_pipeline(preset("kv_aware"), env),
                  decode=build_pipeline(preset(decode), env),
                  disagg=DisaggPolicy(min_remote_tokens=min_remote_tokens)), index


def hold(index: PrefixIndex, worker: str, tokens: list[int]) -> None:
    """``worker`` reports ``tokens`` (full blocks) stored, as its KV events would."""
    engine_hashes = tuple(hash((worker, i)) & (2**63 - 1) for i in range(len(tokens) // BS))
    index.apply(worker, KvEventBatch(0, 0.0, (BlockStored(engine_hashes, None, tuple(tokens), BS),)))


PREFILL = [W("p0", host="h0"), W("p1", host="h1")]


def test_a_prompt_cached_on_a_prefill_worker_is_not_recomputed_on_a_decode_worker() -> None:
    r, index = router()
    hold(index, "p1", CACHED)
    req = r.make_request(PROMPT, kv_bytes_per_token=1000)
    plan = r.plan(req, PREFILL, [W("d0", host="h0"), W("d1", host="h1")])
    # 16 tokens left on p1 but 6,160 on either decode worker: the prompt is prefilled where it is cached.
    assert (plan.mode, plan.reason) == ("remote", "disaggregated")
    assert plan.remote_uncached_tokens == 16 and plan.local is None
    # No decode worker holds any of it, so no local candidate was even chosen (the policy's shortcut).
    assert plan.local_uncached_tokens is None
    assert not r.disagg.local_possible(req, r.match(req), PREFILL, [W("d0"), W("d1")])
    # Priced against a decode worker's own (empty) cache, the local path is 6,160 tokens: still remote.
    direct = r.disagg.decide(req, r.match(req), PREFILL, [W("d0")], Decision("d0", 0, "least_loaded"))
    assert (direct.mode, direct.local_uncached_tokens) == ("remote", 6160)
    assert r.route_prefill(req, PREFILL).worker_id == "p1"


def test_a_prompt_cached_on_a_decode_worker_is_prefilled_locally_there() -> None:
    r, index = router()
    hold(index, "d1", CACHED)
    req = r.make_request(PROMPT, kv_bytes_per_token=1000)
    # d1 holds the prompt and is busier than d0: its own cache still leads the local choice.
    decode = [W("d0", host="h0"), W("d1", host="h1", running=2)]
    plan = r.plan(req, PREFILL, decode)
    assert (plan.mode, plan.reason, plan.local_uncached_tokens) == ("local", "short_prompt", 16)
    assert plan.local == Decision("d1", 384, "local_prefill")
    assert plan.remote_uncached_tokens == 6160
    hold(index, "p0", CACHED)  # cached on a prefill worker too: no transfer needed, still local on d1
    again = r.plan(req, PREFILL, decode)
    assert (again.mode, again.local) == ("local", Decision("d1", 384, "local_prefill"))


def test_the_local_choice_is_the_decode_pools_and_its_cache_decides() -> None:
    """A decode profile that ignores caches (round robin) may pick a worker that does not hold the prompt:
    the plan then prices *that* worker's cache and goes remote, rather than recomputing there."""
    r, index = router(decode="round_robin")
    hold(index, "d1", CACHED)
    req = r.make_request(PROMPT)
    decode = [W("d0"), W("d1")]
    first = r.plan(req, PREFILL, decode)  # round robin's next pick is d0, which holds nothing
    assert (first.mode, first.local_uncached_tokens) == ("remote", 6160)
    # The preview was rewound: the remote request's own decode pick is d0, and the next one's is d1.
    assert r.route_decode(req, decode, source_host="h0").worker_id == "d0"
    second = r.plan(req, PREFILL, decode)
    assert (second.mode, second.local) == ("local", Decision("d1", 384, "round_robin"))


def test_plan_moves_the_decode_picker_once_per_request() -> None:
    """Each request moves the decode picker once: a local plan by its preview (the request's seat), a remote
    one by the decode pick after its prefill (the preview was rewound). Round robin stays a rotation."""
    r, index = router(decode="round_robin")
    hold(index, "d1", CACHED)  # a local prefill pays only on d1
    decode = [W("d0"), W("d1"), W("d2")]
    req = r.make_request(PROMPT)
    seats, modes = [], []
    for _ in range(6):
        plan = r.plan(req, PREFILL, decode)
        modes.append(plan.mode)
        seats.append(plan.local.worker_id if plan.local else r.route_decode(req, decode, source_host="h").worker_id)
    assert seats == ["d0", "d1", "d2"] * 2
    assert modes == ["remote", "local", "remote"] * 2


decode_st = st.builds(W, worker_id=st.sampled_from(["d0", "d1", "d2"]), healthy=st.booleans(),
                      running=st.integers(0, 4), waiting=st.integers(0, 3), queue_bound=st.none() | st.integers(1, 3),
                      queued_prefill_tokens=st.integers(0, 2000))
prefill_st = st.builds(W, worker_id=st.sampled_from(["p0", "p1"]), healthy=st.booleans(),
                       waiting=st.integers(0, 3), queue_bound=st.none() | st.integers(1, 3))


@settings(max_examples=200, deadline=None)
@given(decode=st.lists(decode_st, min_size=1, max_size=3, unique_by=lambda w: w.worker_id),
       prefill=st.lists(prefill_st, min_size=1, max_size=2, unique_by=lambda w: w.worker_id),
       match=st.dictionaries(st.sampled_from(["p0", "p1", "d0", "d1", "d2"]), st.integers(1, 64)),
       blocks=st.integers(1, 64), min_remote=st.sampled_from([0, 16, 256, 900]),
       profile=st.sampled_from(["decode", "round_robin", "least_loaded"]))
def test_plan_invariants(decode: list[W], prefill: list[W], match: dict[str, int], blocks: int, min_remote: int,
                         profile: str) -> None:
    r, _ = router(decode=profile, min_remote_tokens=min_remote)
    req = r.make_request(list(range(blocks * BS)))
    plan = r.plan(req, prefill, decode, match=match)
    best_prefill = max((match.get(w.worker_id, 0) for w in prefill if w.healthy), default=0)
    assert plan.remote_uncached_tokens == req.uncached_tokens(best_prefill)
    if plan.mode == "local":
        assert plan.local is not None
        chosen = next(w for w in decode if w.worker_id == plan.local.worker_id)
        assert chosen.healthy
        assert plan.local.matched_blocks == match.get(chosen.worker_id, 0)
        assert plan.local_uncached_tokens == req.uncached_tokens(plan.local.matched_blocks)
        if plan.reason == "short_prompt":  # a decode worker never recomputes a transfer's worth of tokens
            assert plan.local_uncached_tokens < min_remote
        else:
            assert plan.reason == "prefill_saturated" and chosen.has_room
            assert not any(w.healthy and w.has_room for w in prefill)
    else:
        assert plan.local is None
        if plan.local_uncached_tokens is not None:
            assert plan.local_uncached_tokens >= min_remote
    if not r.disagg.local_possible(req, match, prefill, decode):
        for w in decode:  # skipping the local preview changed nothing: no candidate would be local
            cand = Decision(w.worker_id, match.get(w.worker_id, 0), "x")
            assert r.disagg.decide(req, match, prefill, decode, cand).mode == "remote"


@pytest.mark.parametrize("min_remote", [0, 256])
def test_no_decode_worker_means_remote(min_remote: int) -> None:
    r, _ = router(min_remote_tokens=min_remote)
    assert r.plan(r.make_request(PROMPT[:32]), PREFILL, []).mode == "remote"
    assert r.plan(r.make_request(PROMPT[:32]), PREFILL, [W("d0", healthy=False)]).mode == "remote"
