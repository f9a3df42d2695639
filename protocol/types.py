"""Typed messages that cross the orchestrator/worker boundary (converted to and from protobuf in
``protocol.convert``). Frozen dataclasses; never ``dict[str, Any]``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingSpec:
    """Sampling parameters the worker hands to its engine. ``temperature == 0`` means greedy."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False


@dataclass(frozen=True)
class EngineLoad:
    """A snapshot of an engine's load, from its scheduler statistics. ``kv_usage`` is in [0, 1]."""

    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    kv_blocks_pulled: int = 0
    kv_bytes_pulled: int = 0
    kv_pull_seconds: float = 0.0
    kv_pulls: int = 0


@dataclass(frozen=True)
class EngineInfo:
    """Static facts about an engine, fixed once it has started."""

    engine_id: str
    model: str
    block_size: int
    num_blocks: int
    max_model_len: int
    kv_bytes_per_token: int


@dataclass(frozen=True)
class BlockStored:
    """Blocks an engine added to its prefix cache, in vLLM's shape: chained engine hashes (opaque),
    the parent block's engine hash, and the token ids of all stored blocks in order. ``cache_salt`` is
    the tenant salt of the request's first block, set only when ``parent_block_hash`` is None."""

    block_hashes: tuple[int, ...]
    parent_block_hash: int | None
    token_ids: tuple[int, ...]
    block_size: int
    cache_salt: str | None = None


@dataclass(frozen=True)
class BlockRemoved:
    """Blocks an engine evicted, named by their engine hashes."""

    block_hashes: tuple[int, ...]


@dataclass(frozen=True)
class AllBlocksCleared:
    """The engine dropped its whole prefix cache."""


KvEvent = BlockStored | BlockRemoved | AllBlocksCleared


@dataclass(frozen=True)
class KvEventBatch:
    """Events published together. ``seq`` increases by one per batch per engine; a gap means the
    receiver missed events and must resync (drop what it knows of this worker)."""

    seq: int
    timestamp: float
    events: tuple[KvEvent, ...]
