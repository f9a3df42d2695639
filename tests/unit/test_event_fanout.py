"""EventFanout: every subscriber sees batches published after it subscribed; a subscriber that falls
behind is dropped and its stream ends (so it reconnects and resyncs); close ends every stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from protocol.types import BlockRemoved, KvEventBatch
from worker.event_fanout import EventFanout


class FakeEngine:
    """Publishes whatever the test puts in ``feed``; ``None`` ends the engine's stream."""

    def __init__(self) -> None:
        self.feed: asyncio.Queue[KvEventBatch | None] = asyncio.Queue()

    async def kv_events(self) -> AsyncIterator[KvEventBatch]:
        while (batch := await self.feed.get()) is not None:
            yield batch


def batch(seq: int) -> KvEventBatch:
    return KvEventBatch(seq=seq, timestamp=float(seq), events=(BlockRemoved(block_hashes=(seq,)),))


async def collect(stream: AsyncIterator[KvEventBatch], into: list[int]) -> None:
    async for b in stream:
        into.append(b.seq)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_subscribers_get_batches_in_order_and_close_ends_them() -> None:
    engine = FakeEngine()
    fanout = EventFanout(engine)  # type: ignore[arg-type]
    fanout.start()
    seen_a: list[int] = []
    seen_b: list[int] = []
    task_a = asyncio.create_task(collect(fanout.subscribe(), seen_a))
    await settle()
    engine.feed.put_nowait(batch(1))
    await settle()
    task_b = asyncio.create_task(collect(fanout.subscribe(), seen_b))
    await settle()
    for seq in (2, 3):
        engine.feed.put_nowait(batch(seq))
    await settle()
    assert seen_a == [1, 2, 3] and seen_b == [2, 3]
    assert fanout.published == 3
    await fanout.close()
    await asyncio.wait_for(asyncio.gather(task_a, task_b), 2)


async def test_a_slow_subscriber_is_dropped_and_its_stream_ends() -> None:
    engine = FakeEngine()
    fanout = EventFanout(engine, queue_bound=2)  # type: ignore[arg-type]
    fanout.start()
    slow = fanout.subscribe()
    slow_seen: list[int] = []

    async def read_one() -> None:
        slow_seen.append((await anext(slow)).seq)

    first = asyncio.create_task(read_one())  # subscribes, then stops reading after one batch
    await settle()
    fast: list[int] = []
    fast_task = asyncio.create_task(collect(fanout.subscribe(), fast))
    await settle()
    for seq in range(1, 7):  # paced, so the fast subscriber keeps up
        engine.feed.put_nowait(batch(seq))
        await settle()
    await first
    # The rest of the slow stream must end (not wait forever for batches it will never get); what it saw
    # is in order, with a gap where it was dropped, so on reconnecting it resyncs.
    await asyncio.wait_for(collect(slow, slow_seen), 2)
    assert slow_seen == sorted(slow_seen) and len(slow_seen) < 6
    assert fast == [1, 2, 3, 4, 5, 6]  # the others are not slowed down
    await fanout.close()
    await asyncio.wait_for(fast_task, 2)
