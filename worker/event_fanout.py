"""Fan one engine's KV event stream out to the orchestrators subscribed to this worker.

One pump task reads ``engine.kv_events()``; each subscriber gets a bounded queue. A subscriber that
falls behind is dropped (its stream ends) rather than slowing the engine; when it reconnects it sees
a sequence gap and resyncs. Owned by the worker runtime; ``close`` ends every stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from protocol.types import KvEventBatch
from worker.engine import EngineAdapter

log = logging.getLogger(__name__)
_END = None


class EventFanout:
    def __init__(self, engine: EngineAdapter, queue_bound: int = 4096) -> None:
        self._engine = engine
        self._bound = queue_bound
        self._subscribers: set[asyncio.Queue[KvEventBatch | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._pump(), name="kv-event-pump")

    async def _pump(self) -> None:
        try:
            async for batch in self._engine.kv_events():
                self.published += 1
                for queue in list(self._subscribers):
                    try:
                        queue.put_nowait(batch)
                    except asyncio.QueueFull:
                        log.warning("dropping a slow KV event subscriber")
                        self._subscribers.discard(queue)
                        # The queue is full: make room, or the end marker is lost and the stream never ends.
                        with contextlib.suppress(asyncio.QueueEmpty):
                            queue.get_nowait()
                        queue.put_nowait(_END)
        except Exception:  # cancellation (``close``) is no Exception: it propagates
            log.exception("KV event stream of the engine failed")

    async def subscribe(self) -> AsyncIterator[KvEventBatch]:
        """Batches published from now on, until this subscriber is dropped or the fanout closes."""
        queue: asyncio.Queue[KvEventBatch | None] = asyncio.Queue(self._bound)
        self._subscribers.add(queue)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                yield item
        finally:
            self._subscribers.discard(queue)

    async def close(self) -> None:
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(_END)
        self._subscribers.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
