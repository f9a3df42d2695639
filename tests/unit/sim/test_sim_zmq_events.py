"""The sim engine's KV events on ZMQ in vLLM's wire format (``worker.engines.sim.zmq_events``): the payload
is byte for byte what vLLM's own msgspec structs encode, vLLM's decoder and pdserve's ``convert_batch``
read it back, and a started engine's events arrive over a socket, with vLLM's replay protocol."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import zmq
import zmq.asyncio

from protocol.engine_args import SimArgs
from protocol.types import AllBlocksCleared, BlockRemoved, BlockStored, KvEventBatch, SamplingSpec
from worker.engine import EngineRequest, EngineSpec, build_engine
from worker.engines.sim import SimEngine
from worker.engines.sim import zmq_events as ze
from worker.engines.vllm_events import KvEventSubscriber, convert_batch

BATCH = KvEventBatch(seq=7, timestamp=1234.5, events=(
    BlockStored(block_hashes=(2**64 - 1, 5), parent_block_hash=None, token_ids=tuple(range(8)), block_size=4,
                cache_salt="tenant-a"),
    BlockStored(block_hashes=(9,), parent_block_hash=5, token_ids=(8, 9, 10, 11), block_size=4),
    BlockRemoved(block_hashes=(2**64 - 1,)),
    AllBlocksCleared(),
))


def test_payload_decodes_to_the_same_events_through_pdserves_reader() -> None:
    payload = ze.encode_batch(BATCH, msgspec.msgpack.Encoder())
    raw = msgspec.msgpack.decode(payload)
    assert raw[0] == 1234.5 and raw[2] == 0 and raw[1][0]["type"] == "BlockStored"  # [ts, events, dp_rank]
    assert raw[1][0]["extra_keys"] == [["tenant-a"], None] and raw[1][1]["extra_keys"] == [None]
    decoded = msgspec.msgpack.Decoder(type=ze.KVEventBatch).decode(payload)
    assert convert_batch(BATCH.seq, decoded) == BATCH


def test_payload_is_vllms_own_encoding_and_vllms_decoder_reads_it() -> None:
    kv = pytest.importorskip("vllm.distributed.kv_events")  # imports torch: ~10 s here
    ours = ze.encode_batch(BATCH, msgspec.msgpack.Encoder())
    theirs = kv.KVEventBatch(ts=1234.5, data_parallel_rank=0, events=[
        kv.BlockStored(block_hashes=[2**64 - 1, 5], parent_block_hash=None, token_ids=list(range(8)), block_size=4,
                       lora_id=None, medium="GPU", lora_name=None, extra_keys=[("tenant-a",), None], group_idx=0),
        kv.BlockStored(block_hashes=[9], parent_block_hash=5, token_ids=[8, 9, 10, 11], block_size=4, lora_id=None,
                       medium="GPU", lora_name=None, extra_keys=[None], group_idx=0),
        kv.BlockRemoved(block_hashes=[2**64 - 1], medium="GPU", group_idx=0),
        kv.AllBlocksCleared()])
    assert ours == msgspec.msgpack.Encoder().encode(theirs)
    assert convert_batch(7, msgspec.msgpack.Decoder(type=kv.KVEventBatch).decode(ours)) == BATCH


@pytest.mark.parametrize("endpoint", ["tcp://*:5557", "tcp://0.0.0.0:5557", "tcp://10.1.2.3:5557", "tcp://127.0.0.1",
                                      "ipc://", "udp://127.0.0.1:5"])
def test_only_local_endpoints_are_accepted(endpoint: str) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        ze.check_local_endpoint(endpoint)


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:5557", "tcp://127.3.0.2:1", "tcp://[::1]:5557",
                                      "tcp://localhost:9", "ipc:///tmp/x.ipc", "inproc://x"])
def test_local_endpoints_are_kept(endpoint: str) -> None:
    assert ze.check_local_endpoint(endpoint) == endpoint


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def engine() -> AsyncIterator[SimEngine]:
    spec = EngineSpec(model="", worker_id="zmq-0", role="both",
                      args=SimArgs.model_validate({"profile": "tiny-fast", "speedup": 20.0}))
    built = build_engine(spec)
    assert isinstance(built, SimEngine)
    await built.start()
    yield built
    await built.shutdown()


async def test_engine_events_reach_a_vllm_subscriber_and_replay(engine: SimEngine, tmp_path: Path) -> None:
    endpoint, replay = f"ipc://{tmp_path}/events.ipc", f"tcp://127.0.0.1:{free_port()}"
    publisher = ze.ZmqKvEventPublisher(endpoint, topic="kv", replay_endpoint=replay)
    pumping = asyncio.create_task(publisher.run(engine.kv_events()))
    subscriber = KvEventSubscriber(endpoint, "kv")  # pdserve's reader of vLLM's events
    ctx = zmq.asyncio.Context()
    try:
        await asyncio.sleep(0.2)  # a SUB socket misses what is sent before it has joined
        prompt = tuple(range(1, 18))  # 4 full blocks of 4 tokens, and one over
        async for _ in engine.generate(EngineRequest("r", prompt, SamplingSpec(max_tokens=2, temperature=0))):
            pass
        batches = subscriber.batches()
        first = await asyncio.wait_for(anext(batches), 5)
        stored = [e for e in first.events if isinstance(e, BlockStored)]
        assert first.seq == 0 and stored and stored[0].token_ids == prompt[:16] and stored[0].parent_block_hash is None
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(replay)
        await dealer.send_multipart([b"", (0).to_bytes(8, "big")])
        reply = await asyncio.wait_for(dealer.recv_multipart(), 5)
        assert reply[:3] == [b"", b"kv", (0).to_bytes(8, "big")]
        assert convert_batch(0, msgspec.msgpack.Decoder(type=ze.KVEventBatch).decode(reply[3])) == first
        end = await asyncio.wait_for(dealer.recv_multipart(), 5)
        assert end == [b"", b"", ze.END_SEQ, b""] and publisher.published == 1
        dealer.close(linger=0)
    finally:
        subscriber.close()
        ctx.term()
        pumping.cancel()
        await asyncio.gather(pumping, return_exceptions=True)
        publisher.close()
    assert not (tmp_path / "events.ipc").exists()  # closing unbinds


def test_a_busy_endpoint_fails_at_construction_and_leaves_nothing_open() -> None:
    port = free_port()
    first = ze.ZmqKvEventPublisher(f"tcp://127.0.0.1:{port}")
    try:
        with pytest.raises(zmq.ZMQError):
            ze.ZmqKvEventPublisher(f"tcp://127.0.0.1:{port}")
    finally:
        first.close()
        first.close()  # idempotent
