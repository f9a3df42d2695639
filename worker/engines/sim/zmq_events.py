"""Publish a sim engine's KV events on ZMQ exactly as vLLM's ``ZmqEventPublisher`` does, so any consumer of
vLLM's KV events (pdserve's ``worker.engines.vllm_events``, llm-d, Dynamo, vllm-router, ...) reads them.

Wire (vLLM 0.32, ``vllm.distributed.kv_events``): a PUB socket sends multipart ``[topic, seq, payload]``,
``seq`` an 8-byte big-endian batch number and ``payload`` the msgpack of a ``KVEventBatch``
(``[ts, events, data_parallel_rank]``, array-like; each event a map tagged ``"type": "BlockStored" |
"BlockRemoved" | "AllBlocksCleared"``). An optional ROUTER replay socket answers a request
``[b"", start_seq (8 bytes big-endian)]`` with every buffered batch from ``start_seq`` on as
``[b"", topic, seq, payload]`` and then ``[b"", b"", -1 (8 bytes, signed), b""]``.

The msgspec structs below mirror vLLM's field for field (same names, order, tags and options), so the
bytes are vLLM's own (``tests/unit/sim/test_sim_zmq_events.py`` compares them with vLLM's encoder and
decodes them with vLLM's decoder); importing vLLM here would pull torch into a simulated fleet.

Differences from vLLM, on purpose: ``seq`` is the engine's own batch number (``KvEventBatch.seq``), so a
batch the engine dropped shows as a gap, as it would to pdserve's gRPC readers; the publisher always
binds (vLLM connects unless the endpoint has ``*``), and only to ``ipc://``, ``inproc://`` or a loopback
``tcp://`` address: nothing listens on a network interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from protocol.types import AllBlocksCleared as SimCleared
from protocol.types import BlockRemoved as SimRemoved
from protocol.types import BlockStored as SimStored
from protocol.types import KvEvent, KvEventBatch

MEDIUM_GPU = "GPU"  # what vLLM's GPU block pool reports as ``medium``
END_SEQ = (-1).to_bytes(8, "big", signed=True)


class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):  # type: ignore[call-arg]
    ts: float
    events: list[Any]
    data_parallel_rank: int | None = None


class KVCacheEvent(msgspec.Struct, omit_defaults=True, gc=False, tag=True):  # type: ignore[call-arg]
    """Base of vLLM's KV cache events (tagged with the class name)."""


class BlockStored(KVCacheEvent):
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None
    extra_keys: list[tuple[Any, ...] | None] | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None
    kv_cache_spec_sliding_window: int | None = None
    locality: str | None = None
    ownership: str | None = None
    session_id: str | None = None


class BlockRemoved(KVCacheEvent):
    block_hashes: list[int]
    medium: str | None
    group_idx: int | None = None
    locality: str | None = None
    ownership: str | None = None


class AllBlocksCleared(KVCacheEvent):
    pass


class KVEventBatch(EventBatch):
    events: list[BlockStored | BlockRemoved | AllBlocksCleared]


def to_vllm_event(event: KvEvent) -> BlockStored | BlockRemoved | AllBlocksCleared:
    """One pdserve event as vLLM's block pool would publish it. ``extra_keys`` has one entry per block, as
    vLLM's ``to_event_extra_keys`` makes it: the LoRA name on every block, then the cache salt on the first
    block of a sequence (``parent_block_hash`` None); None for a block without either."""
    if isinstance(event, SimStored):
        lora = (event.lora,) if event.lora else ()
        first = (*lora, event.cache_salt) if event.parent_block_hash is None and event.cache_salt else lora
        keys = [(first if i == 0 else lora) or None for i in range(len(event.block_hashes))]
        return BlockStored(block_hashes=list(event.block_hashes), parent_block_hash=event.parent_block_hash,
                           token_ids=list(event.token_ids), block_size=event.block_size, lora_id=None,
                           medium=MEDIUM_GPU, lora_name=event.lora, extra_keys=keys or None, group_idx=0)
    if isinstance(event, SimRemoved):
        return BlockRemoved(block_hashes=list(event.block_hashes), medium=MEDIUM_GPU, group_idx=0)
    if isinstance(event, SimCleared):
        return AllBlocksCleared()
    raise TypeError(f"not a KV event: {event!r}")


def encode_batch(batch: KvEventBatch, encoder: msgspec.msgpack.Encoder, data_parallel_rank: int = 0) -> bytes:
    """The msgpack payload vLLM's publisher sends for ``batch``."""
    events = [to_vllm_event(e) for e in batch.events]
    return encoder.encode(KVEventBatch(ts=batch.timestamp, events=events, data_parallel_rank=data_parallel_rank))


def check_local_endpoint(endpoint: str) -> str:
    """``endpoint`` if it is ``ipc://``, ``inproc://`` or ``tcp://`` on a loopback address with a port
    (``localhost`` counts); ``ValueError`` otherwise (a wildcard or a network address)."""
    if endpoint.startswith(("ipc://", "inproc://")) and len(endpoint.split("://", 1)[1]) > 0:
        return endpoint
    if endpoint.startswith("tcp://"):
        host, sep, port = endpoint[len("tcp://"):].rpartition(":")
        host = host.strip("[]")
        if sep and port.isdigit() and (host == "localhost" or _is_loopback(host)):
            return endpoint
    raise ValueError(f"KV events endpoint {endpoint!r}: use ipc://PATH, inproc://NAME or tcp://<loopback>:PORT")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ZmqKvEventPublisher:
    """Binds a PUB socket on ``endpoint`` (and a ROUTER on ``replay_endpoint`` when given) and publishes
    batches as vLLM does. ``run(batches)`` publishes until the iterator ends or ``close``; ``publish`` sends
    one batch now. Keeps the last ``buffer_steps`` payloads for replay. Single event loop; ``close`` is
    idempotent, closes both sockets and removes an ipc endpoint's file. Idle costs nothing: the tasks wait
    on the engine and on the socket."""

    def __init__(self, endpoint: str, *, topic: str = "", replay_endpoint: str | None = None,
                 buffer_steps: int = 10_000, hwm: int = 100_000, data_parallel_rank: int = 0) -> None:
        self.endpoint = check_local_endpoint(endpoint)
        self.replay_endpoint = check_local_endpoint(replay_endpoint) if replay_endpoint is not None else None
        self._topic = topic.encode()
        self._rank = data_parallel_rank
        self._encoder = msgspec.msgpack.Encoder()
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)
        self._ctx = zmq.asyncio.Context.instance()  # one per process (one IO thread), as vLLM's; never termed
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.set_hwm(hwm)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._replay: zmq.asyncio.Socket | None = None
        self._replay_task: asyncio.Task[None] | None = None
        self.published = 0
        self._bound: list[str] = []
        try:
            self._pub.bind(self.endpoint)
            self._bound.append(self.endpoint)
            if self.replay_endpoint is not None:
                self._replay = self._ctx.socket(zmq.ROUTER)
                self._replay.setsockopt(zmq.LINGER, 0)
                self._replay.bind(self.replay_endpoint)
                self._bound.append(self.replay_endpoint)
        except zmq.ZMQError:
            self.close()
            raise

    def publish(self, batch: KvEventBatch) -> None:
        """Send ``batch`` now (non-blocking; past the high-water mark ZMQ drops it for slow subscribers)."""
        payload = encode_batch(batch, self._encoder, self._rank)
        seq = batch.seq.to_bytes(8, "big")
        with contextlib.suppress(zmq.Again):
            self._pub.send_multipart((self._topic, seq, payload), flags=zmq.NOBLOCK)
        self._buffer.append((batch.seq, payload))
        self.published += 1

    async def run(self, batches: AsyncIterator[KvEventBatch]) -> None:
        """Publish every batch of ``batches`` (e.g. ``engine.kv_events()``) until it ends, and serve replay
        requests meanwhile (when there is a replay endpoint)."""
        if self._replay is not None and self._replay_task is None:
            self._replay_task = asyncio.create_task(self._serve_replay(), name="kv-events-replay")
        async for batch in batches:
            self.publish(batch)

    async def _serve_replay(self) -> None:
        assert self._replay is not None
        sock = self._replay
        while True:
            frames = await sock.recv_multipart()
            if len(frames) != 3:
                continue
            client, _, start = frames
            start_seq = int.from_bytes(start, "big")
            for seq, payload in list(self._buffer):
                if seq >= start_seq:
                    await sock.send_multipart((client, b"", self._topic, seq.to_bytes(8, "big"), payload))
            await sock.send_multipart((client, b"", b"", END_SEQ, b""))

    def close(self) -> None:
        if self._replay_task is not None:
            self._replay_task.cancel()
            self._replay_task = None
        for sock in (self._pub, self._replay):
            if sock is not None and not sock.closed:
                sock.close(linger=0)
        for endpoint in self._bound:  # libzmq leaves an ipc socket's file behind
            if endpoint.startswith("ipc://"):
                with contextlib.suppress(OSError):
                    os.unlink(endpoint[len("ipc://"):])
        self._bound.clear()
