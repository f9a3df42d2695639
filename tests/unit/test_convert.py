"""dataclass <-> protobuf conversion: sampling, load, info and KV event batches (unsigned 64-bit hashes)."""

from __future__ import annotations

import pytest

from protocol import convert
from protocol import worker_pb2 as pb
from protocol.types import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EngineInfo,
    EngineLoad,
    KvEventBatch,
    SamplingSpec,
)

U64 = (1 << 64) - 1


def wire(msg):  # type: ignore[no-untyped-def]
    """Serialize and parse again, as gRPC does."""
    return type(msg).FromString(msg.SerializeToString())


@pytest.mark.parametrize("spec", [
    SamplingSpec(max_tokens=16),
    SamplingSpec(max_tokens=1, temperature=0.0, top_p=0.5, seed=0, stop_token_ids=(2, 0), ignore_eos=True),
    SamplingSpec(max_tokens=2048, temperature=1.5, top_p=0.25, seed=-7),
    SamplingSpec(max_tokens=3, seed=2**62),
])
def test_sampling_round_trip(spec: SamplingSpec) -> None:
    assert convert.sampling_from_pb(wire(convert.sampling_to_pb(spec))) == spec


def test_sampling_seed_none_and_zero_differ() -> None:
    none = convert.sampling_from_pb(wire(convert.sampling_to_pb(SamplingSpec(max_tokens=1))))
    zero = convert.sampling_from_pb(wire(convert.sampling_to_pb(SamplingSpec(max_tokens=1, seed=0))))
    assert none.seed is None and zero.seed == 0


def test_load_round_trip() -> None:
    load = convert.WorkerLoad(
        engine=EngineLoad(running=3, waiting=9, kv_usage=0.625, prefix_cache_queries=2**40, prefix_cache_hits=7,
                          kv_blocks_pulled=11, kv_bytes_pulled=5 * 2**33, kv_pull_seconds=0.125, kv_pulls=4),
        in_flight=12)
    assert convert.load_from_pb(wire(convert.load_to_pb(load))) == load


def test_info_round_trip() -> None:
    desc = convert.WorkerDescription(
        worker_id="prefill-1", role="prefill", host="127.0.0.1", engine_kind="sim",
        engine=EngineInfo(engine_id="eng-1", model="tiny", block_size=32, num_blocks=4096, max_model_len=2048,
                          kv_bytes_per_token=2**33))
    assert convert.info_from_pb(wire(convert.info_to_pb(desc))) == desc


def events_round_trip(batch: KvEventBatch) -> KvEventBatch:
    return convert.events_from_pb(wire(convert.events_to_pb(batch)))


def test_event_batch_round_trip_keeps_kinds_order_and_fields() -> None:
    batch = KvEventBatch(seq=2**40, timestamp=1712345678.5, events=(
        BlockStored(block_hashes=(11, 12), parent_block_hash=None, token_ids=tuple(range(8)), block_size=4,
                    cache_salt="tenant-a"),
        BlockStored(block_hashes=(13,), parent_block_hash=12, token_ids=(8, 9, 10, 11), block_size=4),
        BlockRemoved(block_hashes=(11,)),
        AllBlocksCleared(),
        BlockStored(block_hashes=(), parent_block_hash=0, token_ids=(), block_size=4, cache_salt=""),
    ))
    assert events_round_trip(batch) == batch


def test_parent_hash_zero_is_not_none() -> None:
    stored = BlockStored(block_hashes=(1,), parent_block_hash=0, token_ids=(1,), block_size=1)
    (back,) = events_round_trip(KvEventBatch(0, 0.0, (stored,))).events
    assert isinstance(back, BlockStored) and back.parent_block_hash == 0 and back.cache_salt is None


@pytest.mark.parametrize("engine_hash", [-1, -(2**63), 2**63 - 1, 2**63, U64, 0])
def test_engine_hashes_cross_as_unsigned_64_bit(engine_hash: int) -> None:
    batch = KvEventBatch(seq=1, timestamp=0.0, events=(
        BlockStored(block_hashes=(engine_hash, 5), parent_block_hash=engine_hash, token_ids=(1, 2), block_size=1),
        BlockRemoved(block_hashes=(engine_hash,)),
    ))
    stored, removed = events_round_trip(batch).events
    assert isinstance(stored, BlockStored) and isinstance(removed, BlockRemoved)
    unsigned = engine_hash & U64
    assert 0 <= unsigned <= U64
    assert stored.block_hashes == (unsigned, 5)
    assert stored.parent_block_hash == unsigned
    # The same engine block is named the same way by the event that stores it and the one that removes it.
    assert removed.block_hashes == (unsigned,)
    # A second trip changes nothing: converted hashes are stable ids.
    assert events_round_trip(events_round_trip(batch)) == events_round_trip(batch)


def test_distinct_signed_hashes_stay_distinct() -> None:
    hashes = (-1, U64 - 1, -2, 1)
    batch = KvEventBatch(seq=0, timestamp=0.0, events=(BlockRemoved(block_hashes=hashes),))
    (removed,) = events_round_trip(batch).events
    assert isinstance(removed, BlockRemoved)
    assert removed.block_hashes == (U64, U64 - 1, U64 - 1, 1)
    assert len(set(removed.block_hashes)) == 3  # -2 and 2**64-2 are the same 64-bit value


def test_empty_batch() -> None:
    batch = KvEventBatch(seq=0, timestamp=0.0, events=())
    assert events_round_trip(batch) == batch


def test_conversions_do_not_share_state() -> None:
    spec = SamplingSpec(max_tokens=4, stop_token_ids=(1,))
    msg = convert.sampling_to_pb(spec)
    msg.stop_token_ids.append(9)
    assert spec.stop_token_ids == (1,)
    assert isinstance(convert.events_to_pb(KvEventBatch(0, 0.0, ())), pb.KvEventBatch)
