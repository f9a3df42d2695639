"""BlockManager: allocation, prefix reuse, LRU eviction order, salts, events, reset."""

from __future__ import annotations

import pytest

from protocol.types import BlockRemoved, BlockStored
from worker.engines.sim.block_manager import BlockManager, block_hash

BS = 4


def full(bm: BlockManager, seq_id: str, tokens: list[int], salt: str | None = None) -> int | None:
    """Allocate a whole prompt and mark it computed (what a finished prefill leaves behind)."""
    cached = bm.allocate(seq_id, tokens, len(tokens), salt)
    if cached is not None:
        bm.commit(seq_id, tokens, len(tokens))
    return cached


def test_block_hash_is_chained_and_salted() -> None:
    a = block_hash(None, [1, 2, 3, 4])
    assert a == block_hash(None, (1, 2, 3, 4))
    assert block_hash(a, [5, 6, 7, 8]) != block_hash(None, [5, 6, 7, 8])
    assert block_hash(None, [1, 2, 3, 4], "tenant") != a
    assert block_hash(0, [1, 2, 3, 4]) != a  # parent 0 is not "no parent"
    assert 0 <= a < 2**64


def test_second_identical_prompt_reuses_full_blocks_but_not_the_last_token() -> None:
    bm = BlockManager(16, BS)
    prompt = list(range(10))  # 2 full blocks + 2 tokens
    assert full(bm, "a", prompt) == 0
    assert bm.allocate("b", prompt, len(prompt)) == 8
    assert bm.block_table("b")[:2] == bm.block_table("a")[:2]
    assert bm.block_table("b")[2] != bm.block_table("a")[2]
    assert bm.ref_count(bm.block_table("a")[0]) == 2
    # a prompt of exactly 2 full blocks may reuse only the first: its last token must be computed
    assert bm.allocate("c", prompt[:8], 8) == 4


def test_allocate_counts_only_the_leading_run_of_cached_blocks() -> None:
    bm = BlockManager(16, BS)
    full(bm, "a", [1, 1, 1, 1, 2, 2, 2, 2, 3])
    assert bm.match([1, 1, 1, 1, 9, 9, 9, 9, 3, 3, 3, 3, 0]) == 4
    assert bm.match([9, 9, 9, 9, 2, 2, 2, 2, 0]) == 0  # same second block, different parent
    assert bm.match([1, 1, 1, 1, 2, 2, 2, 2, 0]) == 8
    assert bm.match([1, 1, 1, 1, 2, 2, 2, 2]) == 4


def test_cache_salt_isolates_tenants() -> None:
    bm = BlockManager(16, BS)
    prompt = list(range(9))
    full(bm, "a", prompt, salt="t1")
    assert bm.match(prompt, "t1") == 8
    assert bm.match(prompt, "t2") == 0
    assert bm.match(prompt) == 0
    stored = [e for e in bm.take_events() if isinstance(e, BlockStored)]
    assert stored[0].parent_block_hash is None and stored[0].cache_salt == "t1"


def test_out_of_blocks_changes_nothing() -> None:
    bm = BlockManager(4, BS)
    assert bm.allocate("a", list(range(12)), 12) == 0
    free_before = bm.num_free_blocks
    assert bm.allocate("b", list(range(100, 108)), 8) is None
    assert not bm.has("b") and bm.num_free_blocks == free_before
    assert bm.grow("a", 16) is True
    assert bm.grow("a", 17) is False
    assert len(bm.block_table("a")) == 4


def test_freed_blocks_stay_cached_until_evicted_least_recently_freed_first() -> None:
    bm = BlockManager(6, BS)
    a, b = [1] * 8 + [0], [2] * 8 + [0]
    full(bm, "a", a)  # blocks 0,1,2 (2 full + 1 partial)
    full(bm, "b", b)  # blocks 3,4,5
    bm.free("a")
    bm.free("b")
    bm.take_events()
    assert bm.num_cached_blocks == 4 and bm.num_free_blocks == 6
    # 3 fresh blocks: the two uncached partial blocks go first, then a's LAST full block
    assert bm.allocate("c", [7] * 12, 12) == 0
    (removed,) = bm.take_events()
    assert removed == BlockRemoved(block_hashes=(bm.prefix_hashes(a)[1],))
    assert bm.match(a) == 4 and bm.match(b) == 8


def test_cache_hit_takes_blocks_off_the_free_list() -> None:
    bm = BlockManager(3, BS)
    prompt = [5] * 8 + [1]
    full(bm, "a", prompt)
    bm.free("a")
    assert bm.num_free_blocks == 3
    # needs 3 blocks: 2 cached hits + 1 new, must not evict its own hits
    assert bm.allocate("b", prompt, 9) == 8
    assert bm.num_free_blocks == 0
    assert not any(isinstance(e, BlockRemoved) for e in bm.take_events())


def test_hits_that_are_free_count_against_the_free_list() -> None:
    bm = BlockManager(3, BS)
    prompt = [5] * 8 + [1]
    full(bm, "a", prompt)
    bm.free("a")
    # 2 hits (both on the free list) + needs 2 new = 4 > 3 blocks
    assert bm.allocate("b", prompt + [2] * 4, 13) is None
    assert bm.num_free_blocks == 3 and bm.num_cached_blocks == 2


def test_concurrent_duplicate_blocks_register_once() -> None:
    bm = BlockManager(8, BS)
    prompt = [3] * 8 + [1]
    assert bm.allocate("a", prompt, 9) == 0
    assert bm.allocate("b", prompt, 9) == 0  # a's blocks not computed yet: no hit
    bm.commit("a", prompt, 9)
    bm.commit("b", prompt, 9)
    stored = [e for e in bm.take_events() if isinstance(e, BlockStored)]
    assert len(stored) == 1 and len(stored[0].block_hashes) == 2
    assert bm.num_cached_blocks == 2
    bm.free("a")
    bm.free("b")  # b's copies are unhashed: reused first, nothing to evict
    assert bm.allocate("c", [9] * 8, 8) == 0
    assert not any(isinstance(e, BlockRemoved) for e in bm.take_events())


def test_commit_registers_blocks_as_decode_fills_them() -> None:
    bm = BlockManager(8, BS)
    tokens = [1, 2, 3, 4, 5, 6]
    bm.allocate("a", tokens, 6)
    bm.commit("a", tokens, 6)
    (first,) = bm.take_events()
    assert isinstance(first, BlockStored) and first.token_ids == (1, 2, 3, 4)
    tokens += [7, 8]
    assert bm.grow("a", 8)
    bm.commit("a", tokens, 7)  # the last token is not computed yet: block not full
    assert bm.take_events() == ()
    bm.commit("a", tokens, 8)
    (second,) = bm.take_events()
    assert isinstance(second, BlockStored)
    assert second.parent_block_hash == first.block_hashes[0] and second.token_ids == (5, 6, 7, 8)
    assert second.cache_salt is None and second.block_size == BS


def test_stored_events_carry_what_a_router_needs_to_rehash() -> None:
    bm = BlockManager(16, BS)
    tokens = list(range(20))
    full(bm, "a", tokens, salt="s")
    (ev,) = bm.take_events()
    assert isinstance(ev, BlockStored)
    parent, rehashed = ev.parent_block_hash, []
    for i in range(len(ev.block_hashes)):
        parent = block_hash(parent, ev.token_ids[i * BS:(i + 1) * BS], ev.cache_salt if i == 0 else None)
        rehashed.append(parent)
    assert tuple(rehashed) == ev.block_hashes


def test_free_unknown_sequence_raises_and_double_allocate_raises() -> None:
    bm = BlockManager(4, BS)
    bm.allocate("a", [1, 2], 2)
    with pytest.raises(ValueError):
        bm.allocate("a", [1, 2], 2)
    bm.free("a")
    with pytest.raises(KeyError):
        bm.free("a")


def test_rename_moves_a_table_and_keeps_it_growing() -> None:
    bm = BlockManager(8, BS)
    tokens = list(range(6))
    bm.allocate("a", tokens, 6)
    table = bm.block_table("a")
    bm.rename("a", "lease")
    assert not bm.has("a") and bm.block_table("lease") == table
    bm.commit("lease", tokens, 6)
    assert bm.num_cached_blocks == 1
    bm.allocate("a", [9], 1)
    with pytest.raises(ValueError):
        bm.rename("a", "lease")
    bm.free("lease")
    assert bm.usage == pytest.approx(1 / 8)


def test_drain_numbers_batches_consecutively_and_skips_empty() -> None:
    bm = BlockManager(8, BS)
    assert bm.drain_events(1.0) is None
    full(bm, "a", list(range(9)))
    first = bm.drain_events(2.0)
    assert first is not None and first.seq == 0 and first.timestamp == 2.0
    assert bm.drain_events(3.0) is None
    full(bm, "b", list(range(100, 109)))
    second = bm.drain_events(4.0)
    assert second is not None and second.seq == 1


def test_usage_counts_referenced_blocks_only() -> None:
    bm = BlockManager(10, BS)
    full(bm, "a", list(range(9)))
    assert bm.usage == pytest.approx(0.3)
    bm.free("a")
    assert bm.usage == 0.0 and bm.num_cached_blocks == 2


def test_caching_disabled_never_hits_nor_emits() -> None:
    bm = BlockManager(8, BS, enable_caching=False)
    prompt = list(range(9))
    full(bm, "a", prompt)
    assert bm.allocate("b", prompt, 9) == 0
    assert bm.take_events() == ()
