"""Pipeline behaviour shared by every profile: the saturation valve, reasons, empty pools, presets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sched_helpers import request, route

from orchestrator.scheduler.decision import NoEligibleWorker
from orchestrator.scheduler.plugin import PluginEnv
from orchestrator.scheduler.profiles import PRESETS, build_pipeline
from orchestrator.scheduler.registry import REASONS
from orchestrator.scheduler.request import WorkerState as W


def test_saturation_valve_skips_a_full_worker_while_another_has_room() -> None:
    workers = [W("a", waiting=4, queue_bound=4), W("b", running=3, queue_bound=4), W("c", waiting=9, queue_bound=4)]
    decision = route(PRESETS["prefix"], workers, {"a": 4, "b": 1})
    assert (decision.worker_id, decision.reason, decision.matched_blocks) == ("b", "saturation_valve", 1)


def test_valve_stays_shut_when_everyone_is_full() -> None:
    workers = [W("a", waiting=4, queue_bound=4), W("b", waiting=5, queue_bound=4)]
    decision = route(PRESETS["prefix"], workers, {"a": 4})
    assert (decision.worker_id, decision.reason) == ("a", "prefix_hit")


def test_valve_applies_to_round_robin_too() -> None:
    pipe = build_pipeline(PRESETS["round_robin"])
    workers = [W("a", waiting=2, queue_bound=2), W("b", queue_bound=2)]
    picks = [pipe.route(request(), workers, {}) for _ in range(4)]
    assert [d.worker_id for d in picks] == ["b"] * 4
    assert {d.reason for d in picks} == {"saturation_valve"}


def test_no_healthy_worker_raises() -> None:
    with pytest.raises(NoEligibleWorker):
        route(PRESETS["kv_aware"], [W("a", healthy=False)])


def test_every_scorer_abstaining_gives_no_preference() -> None:
    decision = route(PRESETS["session"].model_copy(update={"scorers": PRESETS["session"].scorers[:1]}),
                     [W("a", running=1), W("b")])
    assert (decision.worker_id, decision.reason) == ("b", "no_preference")


worker_st = st.builds(
    W, worker_id=st.sampled_from(["a", "b", "c", "d", "e"]), host=st.sampled_from(["h1", "h2"]),
    healthy=st.booleans(), running=st.integers(0, 5), waiting=st.integers(0, 5), kv_usage=st.floats(0, 1),
    queued_prefill_tokens=st.integers(0, 5000), queue_bound=st.none() | st.integers(1, 4),
    prefill_tokens_per_s=st.sampled_from([0.0, 500.0, 5000.0]))


@settings(max_examples=150, deadline=None)
@given(workers=st.lists(worker_st, min_size=1, max_size=5, unique_by=lambda w: w.worker_id),
       match=st.dictionaries(st.sampled_from(["a", "b", "c", "x"]), st.integers(1, 4)),
       key=st.none() | st.text(max_size=3), profile=st.sampled_from(sorted(PRESETS)))
def test_presets_invariants(workers: list[W], match: dict[str, int], key: str | None, profile: str) -> None:
    pipe = build_pipeline(PRESETS[profile], PluginEnv(seed=3))
    req = request(session_key=key, source_host="h1", kv_bytes_per_token=64)
    if not any(w.healthy for w in workers):
        with pytest.raises(NoEligibleWorker):
            pipe.route(req, workers, match)
        return
    decision = pipe.route(req, workers, match)
    chosen = next(w for w in workers if w.worker_id == decision.worker_id)
    assert chosen.healthy
    assert decision.reason in REASONS
    assert decision.matched_blocks == match.get(chosen.worker_id, 0)
    if not chosen.has_room:  # the valve: a full worker only when every eligible worker is full
        eligible = pipe.candidates(req, workers, match).workers
        assert not any(w.has_room for w in eligible)
