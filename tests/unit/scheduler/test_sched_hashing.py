"""pdserve's chained block hash against a byte-by-byte reference."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.scheduler.hashing import block_hash_list, make_salt


def reference(tokens: list[int], block_size: int, salt: bytes, parent: int | None = None) -> list[int]:
    out: list[int] = []
    prev = salt if parent is None else struct.pack("<Q", parent)
    for start in range(0, len(tokens) - block_size + 1, block_size):
        data = prev + b"".join(struct.pack("<I", t) for t in tokens[start:start + block_size])
        h = xxhash.xxh3_64(data).intdigest()
        out.append(h)
        prev = struct.pack("<Q", h)
    return out


tokens_st = st.lists(st.integers(0, 2**32 - 1), max_size=80)


@settings(max_examples=150, deadline=None)
@given(tokens=tokens_st, block_size=st.integers(1, 9), salt=st.binary(max_size=20))
def test_matches_reference(tokens: list[int], block_size: int, salt: bytes) -> None:
    got = block_hash_list(tokens, block_size, salt)
    assert got == reference(tokens, block_size, salt)
    assert block_hash_list(np.array(tokens, dtype=np.int64), block_size, salt) == got


@settings(max_examples=100, deadline=None)
@given(head=st.lists(st.integers(0, 1000), max_size=30), tail=tokens_st, block_size=st.integers(1, 5))
def test_chain_continues_from_parent(head: list[int], tail: list[int], block_size: int) -> None:
    head = head[: len(head) - len(head) % block_size]
    salt = make_salt("m", None)
    first = block_hash_list(head, block_size, salt)
    if not first:
        return
    rest = block_hash_list(tail, block_size, salt, parent=first[-1])
    assert block_hash_list(head + tail, block_size, salt) == first + rest


def test_partial_block_ignored_and_prefix_stable() -> None:
    salt = make_salt("m", None)
    tokens = list(range(100))
    full = block_hash_list(tokens, 16, salt)
    assert len(full) == 6
    assert block_hash_list(tokens[:96], 16, salt) == full
    assert block_hash_list(tokens[:40], 16, salt) == full[:2]
    assert block_hash_list(tokens[:15], 16, salt) == []


def test_salts_separate_models_and_tenants() -> None:
    salts = {make_salt("llama", None), make_salt("llama", ""), make_salt("llama", "t1"),
             make_salt("qwen", None), make_salt("qwen", "t1")}
    assert len(salts) == 5
    tokens = list(range(64))
    chains = [block_hash_list(tokens, 16, s) for s in salts]
    for i, a in enumerate(chains):
        for b in chains[i + 1:]:
            assert not set(a) & set(b)  # no block of one tenant's chain ever equals another's


def test_changing_one_token_changes_that_block_and_all_after() -> None:
    salt = make_salt("m", None)
    tokens = list(range(64))
    base = block_hash_list(tokens, 16, salt)
    tokens[20] += 1
    changed = block_hash_list(tokens, 16, salt)
    assert changed[0] == base[0]
    assert all(a != b for a, b in zip(changed[1:], base[1:], strict=True))


@pytest.mark.parametrize("bad", [[-1], [2**32]])
def test_out_of_range_tokens_raise(bad: list[int]) -> None:
    with pytest.raises(ValueError):
        block_hash_list(bad * 16, 16, b"")
    with pytest.raises(ValueError):
        block_hash_list(np.array(bad * 16, dtype=np.int64), 16, b"")


def test_bad_block_size_raises() -> None:
    with pytest.raises(ValueError):
        block_hash_list([1, 2, 3], 0, b"")
