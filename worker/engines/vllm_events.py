"""Subscribe to vLLM's ZMQ KV-event publisher and convert its messages to ``protocol.types``.

vLLM publishes multipart messages ``[topic, seq (8-byte big-endian), msgpack(KVEventBatch)]``. The
publisher binds only when its endpoint is ipc/inproc or contains ``*``; pdserve gives every worker
its own ``ipc://`` endpoint so nothing listens on a network interface. Conversion is pure
(``convert_batch``); ``KvEventSubscriber`` is the I/O edge.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from typing import Any

from protocol.types import AllBlocksCleared, BlockRemoved, BlockStored, KvEvent, KvEventBatch


def _cache_salt(extra_keys: Any, lora_name: str | None) -> str | None:
    """The cache_salt string vLLM folds into a first block's hash, from the event's ``extra_keys``. A LoRA
    request's keys start with the adapter's name (vLLM orders them: adapter, then cache_salt), which is
    not a salt."""
    first = extra_keys[0] if extra_keys else None
    if not first:
        return None
    strings = [k for k in first if isinstance(k, str)]
    if lora_name is not None and strings[:1] == [lora_name]:
        strings = strings[1:]
    return strings[-1] if strings else None


def _as_int(block_hash: Any) -> int:
    """vLLM publishes 64-bit ints by default; with VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0 it sends the
    hash bytes, which pdserve folds to their first 8 bytes (the hash is an opaque id either way)."""
    if isinstance(block_hash, (bytes, bytearray)):
        return int.from_bytes(bytes(block_hash[:8]).ljust(8, b"\0"), "big")
    return int(block_hash)


def convert_event(event: Any) -> KvEvent | None:
    """One vLLM event object to its pdserve type; ``None`` for kinds pdserve ignores."""
    kind = type(event).__name__
    if kind == "BlockStored":
        parent = event.parent_block_hash
        lora = getattr(event, "lora_name", None) or None
        return BlockStored(
            block_hashes=tuple(_as_int(h) for h in event.block_hashes),
            parent_block_hash=None if parent is None else _as_int(parent),
            token_ids=tuple(int(t) for t in event.token_ids),
            block_size=int(event.block_size),
            cache_salt=_cache_salt(event.extra_keys, lora) if parent is None else None,
            lora=lora,
        )
    if kind == "BlockRemoved":
        return BlockRemoved(block_hashes=tuple(_as_int(h) for h in event.block_hashes))
    if kind == "AllBlocksCleared":
        return AllBlocksCleared()
    return None


def convert_batch(seq: int, batch: Any) -> KvEventBatch:
    events = tuple(e for e in (convert_event(ev) for ev in batch.events) if e is not None)
    return KvEventBatch(seq=seq, timestamp=float(batch.ts), events=events)


class KvEventSubscriber:
    """A ZMQ SUB socket on one engine's publisher. Owned by the adapter; ``close`` is idempotent."""

    def __init__(self, endpoint: str, topic: str) -> None:
        import zmq
        import zmq.asyncio
        from msgspec.msgpack import Decoder
        from vllm.distributed.kv_events import KVEventBatch

        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt_string(zmq.SUBSCRIBE, topic)
        self._sock.connect(endpoint)
        self._decoder = Decoder(type=KVEventBatch)

    async def batches(self) -> AsyncIterator[KvEventBatch]:
        """Yield batches forever (until ``close``); malformed messages are skipped."""
        while True:
            frames = await self._sock.recv_multipart()
            if len(frames) != 3:
                continue
            (seq,) = struct.unpack(">Q", frames[1])
            yield convert_batch(int(seq), self._decoder.decode(frames[2]))

    def close(self) -> None:
        self._sock.close(linger=0)
        self._ctx.term()
