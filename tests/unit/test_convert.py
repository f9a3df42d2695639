"""dataclass <-> protobuf conversion: Prefill/Generate calls and chunks, abort, sampling, load, info (with the
wire version) and KV event batches (unsigned 64-bit hashes)."""

from __future__ import annotations

import pytest

from protocol import convert
from protocol import worker_pb2 as pb
from protocol.types import (
    WIRE_VERSION,
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EngineInfo,
    EngineLoad,
    GenerateCall,
    KvEventBatch,
    KVHandoff,
    KvPull,
    PrefillCall,
    SamplingSpec,
    TokenChunk,
    TokenLogprob,
    WorkerDescription,
    WorkerLoad,
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
    SamplingSpec(max_tokens=9, top_k=40, min_tokens=4, presence_penalty=-0.3, frequency_penalty=1.7,
                 repetition_penalty=1.15, logit_bias=((5, -100.0), (77, 2.5))),
    SamplingSpec(max_tokens=9, repetition_penalty=0.5, logprobs=0),
    SamplingSpec(max_tokens=9, logprobs=5),
])
def test_sampling_round_trip(spec: SamplingSpec) -> None:
    assert convert.sampling_from_pb(wire(convert.sampling_to_pb(spec))) == spec


def test_sampling_seed_none_and_zero_differ() -> None:
    none = convert.sampling_from_pb(wire(convert.sampling_to_pb(SamplingSpec(max_tokens=1))))
    zero = convert.sampling_from_pb(wire(convert.sampling_to_pb(SamplingSpec(max_tokens=1, seed=0))))
    assert none.seed is None and zero.seed == 0


def test_load_round_trip() -> None:
    load = WorkerLoad(
        engine=EngineLoad(running=3, waiting=9, kv_usage=0.625, prefix_cache_queries=2**40, prefix_cache_hits=7,
                          kv_blocks_pulled=11, kv_bytes_pulled=5 * 2**33, kv_pull_seconds=0.125, kv_pulls=4),
        in_flight=12)
    assert convert.load_from_pb(wire(convert.load_to_pb(load))) == load


ENGINE = EngineInfo(engine_id="eng-1", model="tiny", block_size=32, num_blocks=4096, max_model_len=2048,
                    kv_bytes_per_token=2**33)


@pytest.mark.parametrize("version", [WIRE_VERSION, 1, 7])
def test_info_round_trip_keeps_the_wire_version(version: int) -> None:
    desc = WorkerDescription(worker_id="prefill-1", role="prefill", host="127.0.0.1", engine_kind="sim",
                             engine=ENGINE, wire_version=version)
    assert convert.info_from_pb(wire(convert.info_to_pb(desc))) == desc


def test_a_description_speaks_this_wire_version_and_an_old_worker_reads_as_zero() -> None:
    desc = WorkerDescription(worker_id="w", role="decode", host="h", engine_kind="sim", engine=ENGINE)
    assert desc.wire_version == WIRE_VERSION == 6
    unversioned = convert.info_to_pb(desc)
    unversioned.ClearField("wire_version")  # what a worker built before the field existed sends
    assert convert.info_from_pb(wire(unversioned)).wire_version == 0


HANDOFF = KVHandoff(engine_id="p-0", block_ids=((1, 2), (9,)), host="127.0.0.2", port=5601, tp_size=2,
                    request_id="r-p", first_token=17, num_cached_tokens=32, prompt_tokens=70,
                    lease_deadline=1_700_000_000.5, extra=(("x", "[1]"),), first_token_stops=True)
SPEC = SamplingSpec(max_tokens=8, temperature=0.0, seed=3, stop_token_ids=(2,))


@pytest.mark.parametrize("call", [
    PrefillCall(request_id="r-p", prompt_token_ids=(5, 6, 7), sampling=SPEC, cache_salt="tenant"),
    PrefillCall(request_id="r-p", prompt_token_ids=(5,), sampling=SPEC, lora="tiny-pirate"),
    PrefillCall(request_id="r-p", prompt_token_ids=(), sampling=SamplingSpec(max_tokens=1)),
])
def test_prefill_call_round_trip(call: PrefillCall) -> None:
    assert convert.prefill_call_from_pb(wire(convert.prefill_call_to_pb(call))) == call


@pytest.mark.parametrize("call", [
    GenerateCall(request_id="r-d", prompt_token_ids=(5, 6, 7), sampling=SPEC, cache_salt="t", handoff=HANDOFF),
    GenerateCall(request_id="r-d", prompt_token_ids=(5,), sampling=SPEC),
    GenerateCall(request_id="r-d", prompt_token_ids=(5, 17), sampling=SPEC, handoff=HANDOFF, lora="tiny-pirate",
                 answer_prefix=1),
    GenerateCall(request_id="r-d", prompt_token_ids=(5,), sampling=SPEC,
                 handoff=KVHandoff(engine_id="", block_ids=(), host="", port=0)),  # all defaults: still present
])
def test_generate_call_round_trip_keeps_a_missing_handoff_missing(call: GenerateCall) -> None:
    assert convert.generate_call_from_pb(wire(convert.generate_call_to_pb(call))) == call


def test_an_empty_cache_salt_means_no_salt() -> None:
    call = PrefillCall(request_id="r", prompt_token_ids=(1,), sampling=SPEC, cache_salt="")
    assert convert.prefill_call_from_pb(wire(convert.prefill_call_to_pb(call))).cache_salt is None


def test_prefill_response_carries_the_handoff() -> None:
    assert convert.prefill_response_from_pb(wire(convert.prefill_response_to_pb(HANDOFF))) == HANDOFF


@pytest.mark.parametrize("chunk", [
    TokenChunk(token_ids=(1, 2), num_cached_tokens=64),
    TokenChunk(token_ids=(), finished=True, finish_reason="length", num_cached_tokens=3),
    TokenChunk(token_ids=(9,)),
    TokenChunk(token_ids=(4, 5), logprobs=(TokenLogprob(-0.125, ((4, -0.125), (7, -2.5))), TokenLogprob(-3.0))),
    TokenChunk(token_ids=(3,), kv_pull=KvPull(bytes=5 << 30, seconds=0.0125)),
    TokenChunk(token_ids=(3,), kv_pull=KvPull(bytes=0, seconds=0.0)),  # an empty pull is still a report
])
def test_token_chunk_round_trip(chunk: TokenChunk) -> None:
    assert convert.token_chunk_from_pb(wire(convert.token_chunk_to_pb(chunk))) == chunk


def test_abort_round_trip() -> None:
    assert convert.abort_request_from_pb(wire(convert.abort_request_to_pb("r-d"))) == "r-d"
    assert convert.abort_response_from_pb(wire(convert.abort_response_to_pb(True))) is True
    assert convert.abort_response_from_pb(wire(convert.abort_response_to_pb(False))) is False


def events_round_trip(batch: KvEventBatch) -> KvEventBatch:
    return convert.events_from_pb(wire(convert.events_to_pb(batch)))


def test_event_batch_round_trip_keeps_kinds_order_and_fields() -> None:
    batch = KvEventBatch(seq=2**40, timestamp=1712345678.5, events=(
        BlockStored(block_hashes=(11, 12), parent_block_hash=None, token_ids=tuple(range(8)), block_size=4,
                    cache_salt="tenant-a"),
        BlockStored(block_hashes=(13,), parent_block_hash=12, token_ids=(8, 9, 10, 11), block_size=4),
        BlockStored(block_hashes=(14,), parent_block_hash=None, token_ids=(8, 9, 10, 11), block_size=4,
                    lora="tiny-pirate"),
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
