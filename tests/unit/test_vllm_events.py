"""vLLM KV events -> pdserve types (``convert_event``/``convert_batch``), with stand-ins that carry the
same attributes as vLLM's msgspec classes (importing vLLM takes ~10 s on these machines)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from protocol import convert
from protocol import worker_pb2 as pb
from protocol.types import AllBlocksCleared as PdAllCleared
from protocol.types import BlockRemoved as PdRemoved
from protocol.types import BlockStored as PdStored
from worker.engines.vllm_events import convert_batch, convert_event


# Stand-ins named like vLLM's classes (conversion dispatches on the class name), same fields.
@dataclass
class BlockStored:
    block_hashes: list[Any]
    parent_block_hash: Any
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None
    medium: str | None = "GPU"
    lora_name: str | None = None
    extra_keys: list[tuple[Any, ...] | None] | None = None
    group_idx: int | None = None


@dataclass
class BlockRemoved:
    block_hashes: list[Any]
    medium: str | None = "GPU"
    group_idx: int | None = None


@dataclass
class AllBlocksCleared:
    pass


@dataclass
class SomethingNew:
    payload: int = 0


@dataclass
class KVEventBatch:
    ts: float
    events: list[Any] = field(default_factory=list)
    data_parallel_rank: int | None = None


def test_block_stored_first_block_with_salt() -> None:
    event = BlockStored(block_hashes=[-5, 2**63 + 1], parent_block_hash=None, token_ids=list(range(8)),
                        block_size=4, extra_keys=[("tenant-a",), None])
    assert convert_event(event) == PdStored(block_hashes=(-5, 2**63 + 1), parent_block_hash=None,
                                            token_ids=tuple(range(8)), block_size=4, cache_salt="tenant-a")


def test_block_stored_with_parent_ignores_salt() -> None:
    event = BlockStored(block_hashes=[3], parent_block_hash=-9, token_ids=[1, 2, 3, 4], block_size=4,
                        extra_keys=[("tenant-a",)])
    converted = convert_event(event)
    assert isinstance(converted, PdStored)
    assert converted.parent_block_hash == -9 and converted.cache_salt is None


@pytest.mark.parametrize(("extra_keys", "salt"), [
    (None, None),
    ([], None),
    ([None], None),
    ([()], None),
    ([(("mm-hash", 0), "salt-1")], "salt-1"),  # multimodal (identifier, offset) pairs come before the salt
    ([("lora-x", "salt-2")], "salt-2"),  # the LoRA name comes first, the salt after it
    ([(("mm", 3),)], None),
])
def test_cache_salt_from_extra_keys(extra_keys: Any, salt: str | None) -> None:
    event = BlockStored(block_hashes=[1], parent_block_hash=None, token_ids=[1], block_size=1, extra_keys=extra_keys)
    converted = convert_event(event)
    assert isinstance(converted, PdStored) and converted.cache_salt == salt


@pytest.mark.parametrize(("extra_keys", "salt"), [
    ([("tiny-pirate",), ("tiny-pirate",)], None),  # an adapter's name on every block is not a salt
    ([("tiny-pirate", "tenant-a"), ("tiny-pirate",)], "tenant-a"),
    ([("tiny-pirate", "tiny-pirate")], "tiny-pirate"),  # a salt that happens to equal the adapter's name
])
def test_a_lora_block_names_its_adapter_apart_from_the_salt(extra_keys: Any, salt: str | None) -> None:
    event = BlockStored(block_hashes=[1, 2], parent_block_hash=None, token_ids=[1, 2], block_size=1, lora_id=1,
                        lora_name="tiny-pirate", extra_keys=extra_keys)
    converted = convert_event(event)
    assert isinstance(converted, PdStored) and (converted.lora, converted.cache_salt) == ("tiny-pirate", salt)
    continued = convert_event(BlockStored(block_hashes=[3], parent_block_hash=2, token_ids=[3], block_size=1,
                                          lora_name="tiny-pirate", extra_keys=[("tiny-pirate",)]))
    assert isinstance(continued, PdStored) and (continued.lora, continued.cache_salt) == ("tiny-pirate", None)


def test_removed_cleared_and_unknown_kinds() -> None:
    assert convert_event(BlockRemoved(block_hashes=[1, -2])) == PdRemoved(block_hashes=(1, -2))
    assert convert_event(AllBlocksCleared()) == PdAllCleared()
    assert convert_event(SomethingNew()) is None


def test_convert_batch_drops_unknown_kinds_and_keeps_order() -> None:
    batch = KVEventBatch(ts=12.5, events=[
        BlockStored(block_hashes=[1], parent_block_hash=None, token_ids=[7, 8], block_size=2),
        SomethingNew(),
        BlockRemoved(block_hashes=[1]),
        AllBlocksCleared(),
    ])
    converted = convert_batch(41, batch)
    assert converted.seq == 41 and converted.timestamp == 12.5
    assert [type(e).__name__ for e in converted.events] == ["BlockStored", "BlockRemoved", "AllBlocksCleared"]


def test_negative_engine_hashes_survive_to_the_wire_consistently() -> None:
    batch = KVEventBatch(ts=0.0, events=[
        BlockStored(block_hashes=[-1, -(2**63)], parent_block_hash=-7, token_ids=[1, 2], block_size=1),
        BlockRemoved(block_hashes=[-(2**63)]),
    ])
    msg = pb.KvEventBatch.FromString(convert.events_to_pb(convert_batch(0, batch)).SerializeToString())
    stored, removed = convert.events_from_pb(msg).events
    assert isinstance(stored, PdStored) and isinstance(removed, PdRemoved)
    assert stored.block_hashes == (2**64 - 1, 2**63) and stored.parent_block_hash == 2**64 - 7
    assert removed.block_hashes == (stored.block_hashes[1],)


def test_numpy_like_ints_are_plain_ints() -> None:
    class Int:
        def __init__(self, v: int) -> None:
            self.v = v

        def __int__(self) -> int:
            return self.v

    event = BlockStored(block_hashes=[Int(5)], parent_block_hash=Int(4), token_ids=[Int(1)], block_size=Int(1))  # type: ignore[list-item, arg-type]
    converted = convert_event(event)
    assert converted == PdStored(block_hashes=(5,), parent_block_hash=4, token_ids=(1,), block_size=1)
    assert all(type(h) is int for h in converted.block_hashes)  # type: ignore[union-attr]
