"""The event-fed PrefixIndex and its mask table, fuzzed against a reference that compares token prefixes
directly (no hashing, no bitmasks)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.scheduler.hashing import block_hash_list, make_salt
from orchestrator.scheduler.mask_table import MaskTable
from orchestrator.scheduler.plugin import PluginEnv
from orchestrator.scheduler.prefix_index import PrefixIndex
from orchestrator.scheduler.profiles import build_pipeline, preset
from orchestrator.scheduler.router import Router
from protocol.types import AllBlocksCleared, BlockRemoved, BlockStored, KvEventBatch

BS = 2
MODEL = "m"
Key = tuple[str | None, tuple[int, ...]]  # (cache salt, every token from the chain's start)


class Reference:
    """Per worker: engine hash -> the full token prefix (and salt) the block ends."""

    def __init__(self) -> None:
        self.blocks: dict[str, dict[int, Key]] = {}

    def store(self, worker: str, parent: int | None, salt: str | None, tokens: list[int],
              engine_hashes: list[int]) -> None:
        held = self.blocks.setdefault(worker, {})
        if parent is None:
            key: Key = (salt, ())
        elif parent in held:
            key = held[parent]
        else:
            return
        for i, e in enumerate(engine_hashes):
            key = (key[0], key[1] + tuple(tokens[i * BS:(i + 1) * BS]))
            held[e] = key

    def match(self, salt: str | None, prompt: list[int]) -> dict[str, int]:
        out = {}
        for worker, held in self.blocks.items():
            keys = set(held.values())
            n = 0
            while (n + 1) * BS <= len(prompt) and (salt, tuple(prompt[:(n + 1) * BS])) in keys:
                n += 1
            if n:
                out[worker] = n
        return out

    def size(self) -> int:
        return sum(len(set(held.values())) for held in self.blocks.values())


WORKERS = ("w0", "w1", "w2")
op_st = st.tuples(
    st.sampled_from(["store", "store", "store", "remove", "clear", "gap", "drop_worker"]),
    st.sampled_from(WORKERS),
    st.integers(0, 10**6),  # picks a parent / victim among what the worker has
    st.sampled_from([None, "t"]),
    st.lists(st.integers(0, 2), min_size=BS, max_size=3 * BS),
)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(op_st, max_size=40), content_hashes=st.booleans(),
       prompts=st.lists(st.tuples(st.sampled_from([None, "t"]), st.lists(st.integers(0, 2), max_size=10)),
                        min_size=1, max_size=6))
def test_index_agrees_with_reference(ops, content_hashes, prompts) -> None:  # type: ignore[no-untyped-def]
    index, ref = PrefixIndex(MODEL, BS), Reference()
    seq = dict.fromkeys(WORKERS, 0)
    fresh = itertools.count(1)
    seen: set[str] = set()  # workers the index has had a batch from since they were last dropped
    for kind, worker, pick, salt, tokens in ops:
        held = sorted(ref.blocks.get(worker, {}))
        if kind == "drop_worker":
            index.remove_worker(worker)
            ref.blocks.pop(worker, None)
            seq[worker] = 0
            seen.discard(worker)
            continue
        seq[worker] += 1
        was_seen = worker in seen
        seen.add(worker)
        if kind == "store":
            tokens = tokens[: len(tokens) - len(tokens) % BS]
            parent = None if not held or pick % 3 == 0 else held[pick % len(held)]
            if parent is not None and pick % 7 == 0:
                parent = -pick - 1  # a parent the worker never reported
            n = len(tokens) // BS
            if content_hashes:  # engine hashes derived from content, as vLLM does
                base = ref.blocks.get(worker, {}).get(parent) if parent is not None else (salt, ())
                hashes = [hash(("e", base, tuple(tokens[: (i + 1) * BS]))) for i in range(n)]
            else:
                hashes = [next(fresh) for _ in range(n)]
            event = BlockStored(tuple(hashes), parent, tuple(tokens), BS,
                                cache_salt=salt if parent is None else None)
            ref.store(worker, parent, salt, tokens, hashes)
            index.apply(worker, KvEventBatch(seq[worker], 0.0, (event,)))
        elif kind == "remove" and held:
            victim = held[pick % len(held)]
            ref.blocks[worker].pop(victim)
            index.apply(worker, KvEventBatch(seq[worker], 0.0, (BlockRemoved((victim, -5)),)))
        elif kind == "clear":
            ref.blocks.pop(worker, None)
            index.apply(worker, KvEventBatch(seq[worker], 0.0, (AllBlocksCleared(),)))
        elif kind == "gap":
            seq[worker] += 1
            result = index.apply(worker, KvEventBatch(seq[worker], 0.0, ()))
            assert result.resynced == was_seen
            ref.blocks.pop(worker, None)
        else:
            index.apply(worker, KvEventBatch(seq[worker], 0.0, ()))
    assert index.size == ref.size()
    for salt, prompt in prompts + [(s, list(k)) for held in ref.blocks.values() for s, k in held.values()]:
        hashes = block_hash_list(prompt, BS, make_salt(MODEL, salt))
        assert index.match(hashes) == ref.match(salt, prompt)


def _stored(tokens: list[int], hashes: tuple[int, ...], parent: int | None = None) -> BlockStored:
    return BlockStored(hashes, parent, tuple(tokens), BS)


def test_seq_gap_drops_worker_and_reports_resync() -> None:
    index = PrefixIndex(MODEL, BS)
    assert not index.apply("w", KvEventBatch(5, 0.0, (_stored([1, 2, 3, 4], (10, 11)),))).resynced
    index.apply("v", KvEventBatch(0, 0.0, (_stored([1, 2], (10,)),)))
    assert index.size == 3
    result = index.apply("w", KvEventBatch(7, 0.0, (_stored([9, 9], (20,)),)))
    assert result.resynced and result.cleared == 2 and result.stored == 1
    assert index.stats().resyncs == 1 and index.size == 2
    prompt = block_hash_list([1, 2, 3, 4], BS, make_salt(MODEL, None))
    assert index.match(prompt) == {"v": 1}
    assert not index.apply("w", KvEventBatch(8, 0.0, ())).resynced


def test_unknown_parent_is_skipped_and_counted() -> None:
    index = PrefixIndex(MODEL, BS)
    result = index.apply("w", KvEventBatch(0, 0.0, (_stored([1, 2, 3, 4], (10, 11), parent=99),)))
    assert (result.stored, result.skipped) == (0, 2)
    assert index.stats().skipped_blocks == 2 and index.size == 0


def test_child_chains_from_parents_pdserve_hash() -> None:
    index = PrefixIndex(MODEL, BS)
    index.apply("w", KvEventBatch(0, 0.0, (_stored([1, 2], (10,)), _stored([3, 4, 5, 6], (11, 12), 10))))
    prompt = block_hash_list([1, 2, 3, 4, 5, 6, 7, 8], BS, make_salt(MODEL, None))
    assert index.match(prompt) == {"w": 3}
    index.apply("w", KvEventBatch(1, 0.0, (BlockRemoved((11,)),)))
    assert index.match(prompt) == {"w": 1}


def test_tenant_salt_isolates_chains() -> None:
    index = PrefixIndex(MODEL, BS)
    index.apply("w", KvEventBatch(0, 0.0, (BlockStored((1,), None, (5, 6), BS, cache_salt="a"),)))
    assert index.match(block_hash_list([5, 6], BS, make_salt(MODEL, "a"))) == {"w": 1}
    assert index.match(block_hash_list([5, 6], BS, make_salt(MODEL, "b"))) == {}
    assert index.match(block_hash_list([5, 6], BS, make_salt(MODEL, None))) == {}


def test_a_lora_adapters_blocks_match_only_that_adapter() -> None:
    index = PrefixIndex(MODEL, BS)
    index.apply("w", KvEventBatch(0, 0.0, (BlockStored((1,), None, (5, 6), BS, lora="pirate"),
                                           BlockStored((2,), 1, (7, 8), BS, lora="pirate"))))
    router = Router(model=MODEL, block_size=BS, index=index, prefill=build_pipeline(preset("kv_aware"), PluginEnv()),
                    decode=build_pipeline(preset("decode"), PluginEnv()))
    assert router.match(router.make_request((5, 6, 7, 8), lora="pirate")) == {"w": 2}
    assert router.match(router.make_request((5, 6, 7, 8))) == {}  # the base model computed nothing
    assert router.match(router.make_request((5, 6, 7, 8), lora="parrot")) == {}
    assert router.match(router.make_request((5, 6, 7, 8), cache_salt="t", lora="pirate")) == {}


def test_bad_event_raises_before_mutating() -> None:
    index = PrefixIndex(MODEL, BS)
    good = _stored([1, 2], (10,))
    with pytest.raises(ValueError):
        index.apply("w", KvEventBatch(0, 0.0, (good, BlockStored((11,), None, (1, 2, 3, 4), 4))))
    with pytest.raises(ValueError):
        index.apply("w", KvEventBatch(0, 0.0, (BlockStored((11, 12), None, (1, 2, 3), BS),)))
    assert index.size == 0


def test_remove_worker_frees_slot_for_reuse() -> None:
    index = PrefixIndex(MODEL, BS)
    index.apply("a", KvEventBatch(0, 0.0, (_stored([1, 2], (10,)),)))
    assert index.remove_worker("a") == 1
    index.apply("b", KvEventBatch(0, 0.0, (_stored([3, 4], (10,)),)))
    assert index.match(block_hash_list([1, 2], BS, make_salt(MODEL, None))) == {}
    assert index.match(block_hash_list([3, 4], BS, make_salt(MODEL, None))) == {"b": 1}
    assert index.remove_worker("nobody") == 0


@settings(max_examples=100, deadline=None)
@given(held=st.lists(st.sets(st.integers(0, 12), max_size=10), min_size=1, max_size=70),
       prompt=st.lists(st.integers(0, 12), max_size=12))
def test_mask_table_match_with_many_workers(held: list[set[int]], prompt: list[int]) -> None:
    table = MaskTable()
    for i, blocks in enumerate(held):
        bit = table.bit(f"w{i}")
        for h in blocks:
            table.add(h, bit)
    expected = {}
    for i, blocks in enumerate(held):
        n = next((k for k, h in enumerate(prompt) if h not in blocks), len(prompt))
        if n:
            expected[f"w{i}"] = n
    assert table.match(prompt) == expected
    assert table.num_entries == sum(len(b) for b in held)


def test_same_content_under_two_engine_hashes_needs_both_removed() -> None:
    index = PrefixIndex(MODEL, BS)
    index.apply("w", KvEventBatch(0, 0.0, (_stored([1, 2], (10,)), _stored([1, 2], (77,)))))
    prompt = block_hash_list([1, 2], BS, make_salt(MODEL, None))
    assert index.size == 1
    index.apply("w", KvEventBatch(1, 0.0, (BlockRemoved((10,)),)))
    assert index.match(prompt) == {"w": 1}
    index.apply("w", KvEventBatch(2, 0.0, (BlockRemoved((77,)),)))
    assert index.match(prompt) == {} and index.size == 0
