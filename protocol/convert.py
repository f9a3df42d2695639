"""Conversion between ``protocol.types`` dataclasses and protobuf messages, both directions.

This is the only module that touches ``worker_pb2`` messages: the orchestrator's client and the
worker's gRPC service build and read every message through these functions, and everything else in
pdserve works with frozen dataclasses. Every function returns a new object and mutates nothing.
proto3 strings have no "unset": an empty ``cache_salt`` or ``finish_reason`` reads back as None.
"""

from __future__ import annotations

from protocol import worker_pb2 as pb
from protocol.types import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EngineInfo,
    EngineLoad,
    GenerateCall,
    KvEvent,
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

_U64 = (1 << 64) - 1


# -- requests without fields ---------------------------------------------------------------------------

def info_request_pb() -> pb.InfoRequest:
    return pb.InfoRequest()


def load_request_pb() -> pb.LoadRequest:
    return pb.LoadRequest()


def events_request_pb() -> pb.EventsRequest:
    return pb.EventsRequest()


# -- Prefill / Generate / Abort ------------------------------------------------------------------------

def prefill_call_to_pb(call: PrefillCall) -> pb.PrefillRequest:
    return pb.PrefillRequest(request_id=call.request_id, prompt_token_ids=list(call.prompt_token_ids),
                             sampling=sampling_to_pb(call.sampling), cache_salt=call.cache_salt or "",
                             lora=call.lora or "")


def prefill_call_from_pb(msg: pb.PrefillRequest) -> PrefillCall:
    return PrefillCall(request_id=msg.request_id, prompt_token_ids=tuple(msg.prompt_token_ids),
                       sampling=sampling_from_pb(msg.sampling), cache_salt=msg.cache_salt or None,
                       lora=msg.lora or None)


def prefill_response_to_pb(handoff: KVHandoff) -> pb.PrefillResponse:
    return pb.PrefillResponse(handoff=handoff_to_pb(handoff))


def prefill_response_from_pb(msg: pb.PrefillResponse) -> KVHandoff:
    return handoff_from_pb(msg.handoff)


def generate_call_to_pb(call: GenerateCall) -> pb.GenerateRequest:
    msg = pb.GenerateRequest(request_id=call.request_id, prompt_token_ids=list(call.prompt_token_ids),
                             sampling=sampling_to_pb(call.sampling), cache_salt=call.cache_salt or "",
                             lora=call.lora or "", answer_prefix=call.answer_prefix)
    if call.handoff is not None:
        msg.handoff.CopyFrom(handoff_to_pb(call.handoff))
    return msg


def generate_call_from_pb(msg: pb.GenerateRequest) -> GenerateCall:
    return GenerateCall(
        request_id=msg.request_id, prompt_token_ids=tuple(msg.prompt_token_ids),
        sampling=sampling_from_pb(msg.sampling), cache_salt=msg.cache_salt or None,
        handoff=handoff_from_pb(msg.handoff) if msg.HasField("handoff") else None, lora=msg.lora or None,
        answer_prefix=msg.answer_prefix,
    )


def token_chunk_to_pb(chunk: TokenChunk) -> pb.GenerateChunk:
    """Only ``TokenChunk``'s fields cross; a subclass's extra fields (the engine's handoff) stay behind."""
    logprobs = [pb.TokenLogprob(logprob=lp.logprob, top_ids=[t for t, _ in lp.top],
                                top_logprobs=[v for _, v in lp.top]) for lp in chunk.logprobs]
    msg = pb.GenerateChunk(token_ids=list(chunk.token_ids), finished=chunk.finished,
                           finish_reason=chunk.finish_reason or "", num_cached_tokens=chunk.num_cached_tokens,
                           logprobs=logprobs)
    if chunk.kv_pull is not None:
        msg.kv_pull.CopyFrom(pb.KvPull(bytes=chunk.kv_pull.bytes, seconds=chunk.kv_pull.seconds))
    return msg


def token_chunk_from_pb(msg: pb.GenerateChunk) -> TokenChunk:
    logprobs = tuple(TokenLogprob(lp.logprob, tuple(zip(lp.top_ids, lp.top_logprobs, strict=True)))
                     for lp in msg.logprobs)
    pull = KvPull(msg.kv_pull.bytes, msg.kv_pull.seconds) if msg.HasField("kv_pull") else None
    return TokenChunk(token_ids=tuple(msg.token_ids), finished=msg.finished,
                      finish_reason=msg.finish_reason or None, num_cached_tokens=msg.num_cached_tokens,
                      logprobs=logprobs, kv_pull=pull)


def abort_request_to_pb(request_id: str) -> pb.AbortRequest:
    return pb.AbortRequest(request_id=request_id)


def abort_request_from_pb(msg: pb.AbortRequest) -> str:
    return msg.request_id


def abort_response_to_pb(was_running: bool) -> pb.AbortResponse:
    return pb.AbortResponse(was_running=was_running)


def abort_response_from_pb(msg: pb.AbortResponse) -> bool:
    return bool(msg.was_running)


# -- records -------------------------------------------------------------------------------------------

def sampling_to_pb(spec: SamplingSpec) -> pb.Sampling:
    msg = pb.Sampling(
        max_tokens=spec.max_tokens,
        temperature=spec.temperature,
        top_p=spec.top_p,
        stop_token_ids=list(spec.stop_token_ids),
        ignore_eos=spec.ignore_eos,
        top_k=spec.top_k,
        min_tokens=spec.min_tokens,
        presence_penalty=spec.presence_penalty,
        frequency_penalty=spec.frequency_penalty,
        logit_bias=dict(spec.logit_bias),
        json_object=spec.json_object,
    )
    if spec.seed is not None:
        msg.seed = spec.seed
    if spec.repetition_penalty != 1.0:
        msg.repetition_penalty = spec.repetition_penalty
    if spec.logprobs is not None:
        msg.logprobs = spec.logprobs
    if spec.json_schema is not None:
        msg.json_schema = spec.json_schema
    return msg


def sampling_from_pb(msg: pb.Sampling) -> SamplingSpec:
    return SamplingSpec(
        max_tokens=msg.max_tokens,
        temperature=msg.temperature,
        top_p=msg.top_p,
        seed=msg.seed if msg.HasField("seed") else None,
        stop_token_ids=tuple(msg.stop_token_ids),
        ignore_eos=msg.ignore_eos,
        top_k=msg.top_k,
        min_tokens=msg.min_tokens,
        presence_penalty=msg.presence_penalty,
        frequency_penalty=msg.frequency_penalty,
        repetition_penalty=msg.repetition_penalty if msg.HasField("repetition_penalty") else 1.0,
        logit_bias=tuple(sorted(msg.logit_bias.items())),
        logprobs=msg.logprobs if msg.HasField("logprobs") else None,
        json_object=msg.json_object,
        json_schema=msg.json_schema if msg.HasField("json_schema") else None,
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
        first_token_stops=handoff.first_token_stops,
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
        first_token_stops=msg.first_token_stops,
    )


def load_to_pb(load: WorkerLoad) -> pb.LoadReport:
    e = load.engine
    return pb.LoadReport(
        running=e.running, waiting=e.waiting, kv_usage=e.kv_usage,
        prefix_cache_queries=e.prefix_cache_queries, prefix_cache_hits=e.prefix_cache_hits,
        kv_blocks_pulled=e.kv_blocks_pulled, kv_bytes_pulled=e.kv_bytes_pulled,
        kv_pull_seconds=e.kv_pull_seconds, kv_pulls=e.kv_pulls, in_flight=load.in_flight,
        kv_leases_expired=e.kv_leases_expired, kv_reads_after_expiry=e.kv_reads_after_expiry,
        kv_pull_failures=e.kv_pull_failures,
    )


def load_from_pb(msg: pb.LoadReport) -> WorkerLoad:
    engine = EngineLoad(
        running=msg.running, waiting=msg.waiting, kv_usage=msg.kv_usage,
        prefix_cache_queries=msg.prefix_cache_queries, prefix_cache_hits=msg.prefix_cache_hits,
        kv_blocks_pulled=msg.kv_blocks_pulled, kv_bytes_pulled=msg.kv_bytes_pulled,
        kv_pull_seconds=msg.kv_pull_seconds, kv_pulls=msg.kv_pulls, kv_leases_expired=msg.kv_leases_expired,
        kv_reads_after_expiry=msg.kv_reads_after_expiry, kv_pull_failures=msg.kv_pull_failures,
    )
    return WorkerLoad(engine=engine, in_flight=msg.in_flight)


def info_to_pb(desc: WorkerDescription) -> pb.WorkerInfo:
    e = desc.engine
    return pb.WorkerInfo(
        worker_id=desc.worker_id, role=desc.role, host=desc.host, engine_kind=desc.engine_kind,
        engine_id=e.engine_id, model=e.model, block_size=e.block_size, num_blocks=e.num_blocks,
        max_model_len=e.max_model_len, kv_bytes_per_token=e.kv_bytes_per_token, wire_version=desc.wire_version,
    )


def info_from_pb(msg: pb.WorkerInfo) -> WorkerDescription:
    engine = EngineInfo(
        engine_id=msg.engine_id, model=msg.model, block_size=msg.block_size, num_blocks=msg.num_blocks,
        max_model_len=msg.max_model_len, kv_bytes_per_token=msg.kv_bytes_per_token,
    )
    return WorkerDescription(
        worker_id=msg.worker_id, role=msg.role, host=msg.host, engine_kind=msg.engine_kind, engine=engine,
        wire_version=msg.wire_version,
    )


# -- KV events -----------------------------------------------------------------------------------------

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
        if event.lora is not None:
            stored.lora = event.lora
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
            lora=s.lora if s.HasField("lora") else None,
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
