"""Conversion between ``protocol.types``/``transfer.handoff`` dataclasses and protobuf messages.

This is the only module that touches ``worker_pb2`` message fields; everything else in pdserve works
with frozen dataclasses. Every function returns a new object and mutates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol import worker_pb2 as pb
from protocol.types import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EngineInfo,
    EngineLoad,
    KvEvent,
    KvEventBatch,
    SamplingSpec,
)
from transfer.handoff import KVHandoff

_U64 = (1 << 64) - 1


@dataclass(frozen=True)
class WorkerDescription:
    """What a worker says about itself (``GetInfo``)."""

    worker_id: str
    role: str
    host: str
    engine_kind: str
    engine: EngineInfo


@dataclass(frozen=True)
class WorkerLoad:
    """The engine's load plus the worker's own count of requests in flight."""

    engine: EngineLoad
    in_flight: int


def sampling_to_pb(spec: SamplingSpec) -> pb.Sampling:
    msg = pb.Sampling(
        max_tokens=spec.max_tokens,
        temperature=spec.temperature,
        top_p=spec.top_p,
        stop_token_ids=list(spec.stop_token_ids),
        ignore_eos=spec.ignore_eos,
    )
    if spec.seed is not None:
        msg.seed = spec.seed
    return msg


def sampling_from_pb(msg: pb.Sampling) -> SamplingSpec:
    return SamplingSpec(
        max_tokens=msg.max_tokens,
        temperature=msg.temperature,
        top_p=msg.top_p,
        seed=msg.seed if msg.HasField("seed") else None,
        stop_token_ids=tuple(msg.stop_token_ids),
        ignore_eos=msg.ignore_eos,
    )


def handoff_to_pb(handoff: KVHandoff) -> pb.Handoff:
    return pb.Handoff(
        engine_id=handoff.engine_id,
        block_groups=[pb.BlockGroup(ids=list(group)) for group in handoff.block_ids],
        request_id=handoff.request_id,
        host=handoff.host,
        port=handoff.port,
        tp_size=handoff.tp_size,
        first_token=handoff.first_token,
        num_cached_tokens=handoff.num_cached_tokens,
        prompt_tokens=handoff.prompt_tokens,
        lease_deadline=handoff.lease_deadline,
        extra=dict(handoff.extra),
    )


def handoff_from_pb(msg: pb.Handoff) -> KVHandoff:
    return KVHandoff(
        engine_id=msg.engine_id,
        block_ids=tuple(tuple(group.ids) for group in msg.block_groups),
        request_id=msg.request_id,
        host=msg.host,
        port=msg.port,
        tp_size=msg.tp_size,
        first_token=msg.first_token,
        num_cached_tokens=msg.num_cached_tokens,
        prompt_tokens=msg.prompt_tokens,
        lease_deadline=msg.lease_deadline,
        extra=tuple(sorted(msg.extra.items())),
    )


def load_to_pb(load: WorkerLoad) -> pb.LoadReport:
    e = load.engine
    return pb.LoadReport(
        running=e.running, waiting=e.waiting, kv_usage=e.kv_usage,
        prefix_cache_queries=e.prefix_cache_queries, prefix_cache_hits=e.prefix_cache_hits,
        kv_blocks_pulled=e.kv_blocks_pulled, kv_bytes_pulled=e.kv_bytes_pulled,
        kv_pull_seconds=e.kv_pull_seconds, kv_pulls=e.kv_pulls, in_flight=load.in_flight,
    )


def load_from_pb(msg: pb.LoadReport) -> WorkerLoad:
    engine = EngineLoad(
        running=msg.running, waiting=msg.waiting, kv_usage=msg.kv_usage,
        prefix_cache_queries=msg.prefix_cache_queries, prefix_cache_hits=msg.prefix_cache_hits,
        kv_blocks_pulled=msg.kv_blocks_pulled, kv_bytes_pulled=msg.kv_bytes_pulled,
        kv_pull_seconds=msg.kv_pull_seconds, kv_pulls=msg.kv_pulls,
    )
    return WorkerLoad(engine=engine, in_flight=msg.in_flight)


def info_to_pb(desc: WorkerDescription) -> pb.WorkerInfo:
    e = desc.engine
    return pb.WorkerInfo(
        worker_id=desc.worker_id, role=desc.role, host=desc.host, engine_kind=desc.engine_kind,
        engine_id=e.engine_id, model=e.model, block_size=e.block_size, num_blocks=e.num_blocks,
        max_model_len=e.max_model_len, kv_bytes_per_token=e.kv_bytes_per_token,
    )


def info_from_pb(msg: pb.WorkerInfo) -> WorkerDescription:
    engine = EngineInfo(
        engine_id=msg.engine_id, model=msg.model, block_size=msg.block_size, num_blocks=msg.num_blocks,
        max_model_len=msg.max_model_len, kv_bytes_per_token=msg.kv_bytes_per_token,
    )
    return WorkerDescription(
        worker_id=msg.worker_id, role=msg.role, host=msg.host, engine_kind=msg.engine_kind, engine=engine
    )


def _event_to_pb(event: KvEvent) -> pb.KvEvent:
    if isinstance(event, BlockStored):
        stored = pb.BlockStored(
            block_hashes=[h & _U64 for h in event.block_hashes],
            token_ids=list(event.token_ids),
            block_size=event.block_size,
        )
        if event.parent_block_hash is not None:
            stored.parent_block_hash = event.parent_block_hash & _U64
        if event.cache_salt is not None:
            stored.cache_salt = event.cache_salt
        return pb.KvEvent(stored=stored)
    if isinstance(event, BlockRemoved):
        return pb.KvEvent(removed=pb.BlockRemoved(block_hashes=[h & _U64 for h in event.block_hashes]))
    return pb.KvEvent(cleared=pb.AllBlocksCleared())


def _event_from_pb(msg: pb.KvEvent) -> KvEvent:
    kind = msg.WhichOneof("kind")
    if kind == "stored":
        s = msg.stored
        return BlockStored(
            block_hashes=tuple(s.block_hashes),
            parent_block_hash=s.parent_block_hash if s.HasField("parent_block_hash") else None,
            token_ids=tuple(s.token_ids),
            block_size=s.block_size,
            cache_salt=s.cache_salt if s.HasField("cache_salt") else None,
        )
    if kind == "removed":
        return BlockRemoved(block_hashes=tuple(msg.removed.block_hashes))
    return AllBlocksCleared()


def events_to_pb(batch: KvEventBatch) -> pb.KvEventBatch:
    """Engine hashes are sent as unsigned 64-bit values (negative Python ints are wrapped)."""
    return pb.KvEventBatch(
        seq=batch.seq, timestamp=batch.timestamp, events=[_event_to_pb(e) for e in batch.events]
    )


def events_from_pb(msg: pb.KvEventBatch) -> KvEventBatch:
    return KvEventBatch(
        seq=msg.seq, timestamp=msg.timestamp, events=tuple(_event_from_pb(e) for e in msg.events)
    )
