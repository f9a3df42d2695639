"""Approximate prefix index for engines that publish no KV events.

The router records, on each routing decision, that the chosen worker now holds the prompt's blocks, and
forgets them as the engine probably would: least recently used first once a worker exceeds
``capacity_blocks``, and any block not touched for ``ttl_s`` seconds. Time is passed in (``now``); the
index never reads a clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from .mask_table import MaskTable


class ApproxPrefixIndex:
    """Guessed prefix index: mutated by ``observe_route``/``insert``, ``expire``, ``match(now=...)`` and
    ``remove_worker``. Not thread-safe; no I/O.

    Raises ``ValueError`` on a non-positive capacity or TTL.
    """

    def __init__(self, capacity_blocks: int, ttl_s: float) -> None:
        if capacity_blocks < 1 or ttl_s <= 0:
            raise ValueError("capacity_blocks must be >= 1 and ttl_s > 0")
        self.capacity_blocks = capacity_blocks
        self.ttl_s = ttl_s
        self._table = MaskTable()
        self._lru: dict[str, OrderedDict[int, float]] = {}  # worker -> hash -> last use, oldest first

    def insert(self, worker_id: str, block_hashes: Sequence[int], now: float) -> int:
        """Record that the worker holds these blocks as of ``now`` (refreshing ones it had); evicts LRU
        blocks past capacity. Returns how many blocks were new to the worker."""
        self.expire(now)
        bit = self._table.bit(worker_id)
        lru = self._lru.setdefault(worker_id, OrderedDict())
        added = 0
        for h in block_hashes:
            if h in lru:
                lru.move_to_end(h)
            else:
                added += self._table.add(h, bit)
            lru[h] = now
        while len(lru) > self.capacity_blocks:
            old, _ = lru.popitem(last=False)
            self._table.discard(old, bit)
        return added

    def observe_route(self, worker_id: str, block_hashes: Sequence[int], now: float) -> None:
        """The router sent this prompt to ``worker_id``: same as ``insert``."""
        self.insert(worker_id, block_hashes, now)

    def expire(self, now: float) -> int:
        """Drop blocks last used at or before ``now - ttl_s``; returns how many were dropped."""
        horizon = now - self.ttl_s
        dropped = 0
        for worker_id, lru in self._lru.items():
            if not lru:
                continue
            bit = self._table.bit(worker_id)
            while lru:
                h, last = next(iter(lru.items()))
                if last > horizon:
                    break
                del lru[h]
                dropped += self._table.discard(h, bit)
        return dropped

    def match(self, block_hashes: Sequence[int], *, now: float | None = None) -> dict[str, int]:
        """Worker -> leading blocks it is believed to hold (absent means 0). With ``now``, expired blocks
        are dropped first (mutates); without it, reads only."""
        if now is not None:
            self.expire(now)
        return self._table.match(block_hashes)

    def remove_worker(self, worker_id: str) -> int:
        """Forget the worker; returns how many blocks were dropped."""
        lru = self._lru.pop(worker_id, None)
        if lru is None:
            return 0
        dropped = self._table.discard_all(lru, self._table.bit(worker_id))
        self._table.release(worker_id)
        return dropped

    @property
    def size(self) -> int:
        return self._table.num_entries
