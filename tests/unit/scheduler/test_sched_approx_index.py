"""ApproxPrefixIndex (insert on routing, LRU + TTL) against a list-based reference."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.scheduler.approx_index import ApproxPrefixIndex

CAP, TTL = 5, 10.0


class Reference:
    def __init__(self) -> None:
        self.held: dict[str, list[tuple[int, float]]] = {}  # oldest first

    def expire(self, now: float) -> None:
        for worker, items in self.held.items():
            self.held[worker] = [(h, t) for h, t in items if t > now - TTL]

    def insert(self, worker: str, hashes: list[int], now: float) -> None:
        self.expire(now)
        items = self.held.setdefault(worker, [])
        for h in hashes:
            items[:] = [(x, t) for x, t in items if x != h] + [(h, now)]
        del items[: max(0, len(items) - CAP)]

    def match(self, hashes: list[int]) -> dict[str, int]:
        out = {}
        for worker, items in self.held.items():
            have = {h for h, _ in items}
            n = 0
            while n < len(hashes) and hashes[n] in have:
                n += 1
            if n:
                out[worker] = n
        return out


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.lists(st.integers(0, 8), max_size=7),
                                st.floats(0, 6), st.booleans()), max_size=30))
def test_agrees_with_reference(steps: list[tuple[str, list[int], float, bool]]) -> None:
    index, ref = ApproxPrefixIndex(CAP, TTL), Reference()
    now = 0.0
    for worker, hashes, dt, is_insert in steps:
        now += dt
        if is_insert:
            index.insert(worker, hashes, now)
            ref.insert(worker, hashes, now)
        else:
            ref.expire(now)
            assert index.match(hashes, now=now) == ref.match(hashes)
        assert index.size == sum(len(v) for v in ref.held.values())


def test_lru_evicts_oldest_past_capacity() -> None:
    index = ApproxPrefixIndex(capacity_blocks=3, ttl_s=100)
    index.insert("w", [1, 2, 3], now=0)
    index.insert("w", [1], now=1)  # refresh 1: 2 is now the oldest
    index.insert("w", [9], now=2)
    assert index.match([1]) == {"w": 1}
    assert index.match([2]) == {}
    assert index.size == 3


def test_ttl_expires_untouched_blocks() -> None:
    index = ApproxPrefixIndex(capacity_blocks=10, ttl_s=5)
    index.observe_route("w", [1, 2], now=0)
    assert index.match([1, 2], now=4.9) == {"w": 2}
    assert index.match([1, 2], now=5.0) == {}
    assert index.size == 0


def test_remove_worker_and_bad_config() -> None:
    index = ApproxPrefixIndex(4, 1)
    index.insert("w", [1, 2], 0)
    assert index.remove_worker("w") == 2 and index.match([1]) == {}
    with pytest.raises(ValueError):
        ApproxPrefixIndex(0, 1)
