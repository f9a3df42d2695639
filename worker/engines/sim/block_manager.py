"""A paged KV block pool with prefix caching, LRU eviction and KV events in vLLM's shape.

The pool has ``num_blocks`` blocks of ``block_size`` tokens. A sequence (named by a string id) owns a
block table. Once the tokens of a FULL block are computed (``commit``) the block is registered in the
prefix cache under a chained content hash, ``block_hash(parent, tokens, salt)``, where ``salt`` (the
tenant's cache salt) is folded into the first block's hash only. The hash is this engine's own and is
opaque to the router, which re-hashes the token ids carried by ``BlockStored``.

Contracts (checked by the property tests):

* every block is either referenced (``ref_count > 0``) by the tables holding it, or on the free list;
  never both, never neither; a block is shared only if it is cached;
* the free list is in eviction order: blocks without a hash first (reused first, like vLLM), then
  unreferenced cached blocks, least recently freed first; taking a cached block from the free list
  evicts it and emits ``BlockRemoved``;
* a new sequence reuses the longest run of cached full blocks that prefix its tokens, but never
  its last token (that token must be computed to sample the next one), as vLLM does;
* replaying the emitted events into a set (add on ``BlockStored``, discard on ``BlockRemoved``)
  yields exactly ``cached_block_hashes()``. When two sequences compute the same block concurrently
  only the first registers it; the copy stays unhashed. If the registered block is then evicted, the
  copy's holder still chains its next blocks to that hash, so a ``BlockStored`` may name a parent that
  is no longer cached; pdserve's prefix index skips such a run. (vLLM v1 registers both copies under
  the hash, so there the parent stays cached while either copy lives: a known difference, left alone.)

Not thread-safe; pure bookkeeping, no I/O and no clock (``drain_events`` takes the timestamp).
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Sequence

import xxhash

from protocol.types import BlockRemoved, BlockStored, KvEvent, KvEventBatch


def block_hash(parent: int | None, tokens: Sequence[int], salt: str | None = None) -> int:
    """This engine's 64-bit chained hash of one full block: xxh3 over (parent, token ids, salt)."""
    head = b"\x00" if parent is None else b"\x01" + parent.to_bytes(8, "little")
    tail = b"" if salt is None else b"\x02" + salt.encode()
    return xxhash.xxh3_64_intdigest(head + array("q", tokens).tobytes() + tail)


class BlockManager:
    """Block tables, reference counts, the prefix cache and its event log for one engine."""

    def __init__(self, num_blocks: int, block_size: int, *, enable_caching: bool = True) -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError("num_blocks and block_size must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_caching = enable_caching
        self._ref = [0] * num_blocks
        self._hash: list[int | None] = [None] * num_blocks
        self._cached: dict[int, int] = {}  # block hash -> block id
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._tables: dict[str, list[int]] = {}
        self._chain: dict[str, list[int]] = {}  # hashes of the sequence's committed full blocks
        self._salt: dict[str, str | None] = {}
        self._pending: list[KvEvent] = []
        self._next_seq = 0

    # ----------------------------------------------------------------- queries (no side effects)
    @property
    def num_free_blocks(self) -> int:
        """Blocks a sequence can take: never-used, freed, and unreferenced cached (evictable) ones."""
        return len(self._free)

    @property
    def num_cached_blocks(self) -> int:
        return len(self._cached)

    @property
    def usage(self) -> float:
        """Fraction of blocks referenced by some sequence (vLLM's ``kv_cache_usage``)."""
        return 1.0 - len(self._free) / self.num_blocks

    def ref_count(self, block_id: int) -> int:
        return self._ref[block_id]

    def is_free(self, block_id: int) -> bool:
        return block_id in self._free

    def block_hash_of(self, block_id: int) -> int | None:
        """The hash under which ``block_id`` is cached, or None."""
        return self._hash[block_id]

    def has(self, seq_id: str) -> bool:
        return seq_id in self._tables

    def block_table(self, seq_id: str) -> tuple[int, ...]:
        """The block ids of ``seq_id`` in token order; ``KeyError`` if it holds none."""
        return tuple(self._tables[seq_id])

    def cached_block_hashes(self) -> frozenset[int]:
        return frozenset(self._cached)

    def prefix_hashes(self, token_ids: Sequence[int], cache_salt: str | None = None) -> list[int]:
        """Chained hashes of every full block of ``token_ids`` (what ``commit`` would register)."""
        bs, out, parent = self.block_size, [], None
        for i in range(len(token_ids) // bs):
            parent = block_hash(parent, token_ids[i * bs:(i + 1) * bs], cache_salt if i == 0 else None)
            out.append(parent)
        return out

    def match(self, token_ids: Sequence[int], cache_salt: str | None = None) -> int:
        """Cached tokens ``allocate`` would reuse for a new sequence with these tokens: the leading
        cached full blocks that end before its last token, times ``block_size``."""
        return len(self._match(token_ids, cache_salt)) * self.block_size

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks needed to hold ``num_tokens`` tokens."""
        return -(-num_tokens // self.block_size)

    # ----------------------------------------------------------------- lifecycle
    def allocate(self, seq_id: str, token_ids: Sequence[int], num_tokens: int,
                 cache_salt: str | None = None) -> int | None:
        """Give ``seq_id`` a block table covering ``num_tokens`` tokens, reusing cached blocks.

        The cached prefix is the leading cached full blocks of ``token_ids`` that end before its last
        token. Returns the number of cached tokens (a multiple of ``block_size``), or None, changing
        nothing, when the free list cannot supply the rest. Cached blocks are counted as present even
        where ``num_tokens`` is smaller. ``ValueError`` if ``seq_id`` already holds blocks.
        """
        if seq_id in self._tables:
            raise ValueError(f"sequence {seq_id!r} already holds blocks")
        hits = self._match(token_ids, cache_salt)
        need = self.blocks_for(num_tokens) - len(hits)
        evictable_hits = sum(1 for _, b in hits if self._ref[b] == 0)
        if need > len(self._free) - evictable_hits:
            return None
        table = []
        for _, b in hits:
            if self._ref[b] == 0:
                del self._free[b]
            self._ref[b] += 1
            table.append(b)
        table.extend(self._take(need))
        self._tables[seq_id] = table
        self._chain[seq_id] = [h for h, _ in hits]
        self._salt[seq_id] = cache_salt
        return len(hits) * self.block_size

    def grow(self, seq_id: str, num_tokens: int) -> bool:
        """Extend ``seq_id``'s table to cover ``num_tokens``; False (changing nothing) if out of blocks."""
        table = self._tables[seq_id]
        need = self.blocks_for(num_tokens) - len(table)
        if need <= 0:
            return True
        if need > len(self._free):
            return False
        table.extend(self._take(need))
        return True

    def commit(self, seq_id: str, token_ids: Sequence[int], num_computed: int) -> None:
        """Register in the prefix cache every full block among the first ``num_computed`` tokens of
        ``token_ids`` (the sequence's tokens so far) not yet registered; emits ``BlockStored``."""
        if not self.enable_caching:
            return
        chain, table, bs = self._chain[seq_id], self._tables[seq_id], self.block_size
        full = min(num_computed, len(token_ids), len(table) * bs) // bs
        if full <= len(chain):
            return
        salt = self._salt[seq_id]
        run: list[int] = []
        run_tokens: list[int] = []
        run_parent: int | None = None
        for i in range(len(chain), full):
            parent = chain[-1] if chain else None
            tokens = token_ids[i * bs:(i + 1) * bs]
            h = block_hash(parent, tokens, salt if i == 0 else None)
            chain.append(h)
            if h in self._cached:  # another sequence registered the same content first
                self._emit_stored(run, run_parent, run_tokens, salt)
                run, run_tokens = [], []
                continue
            b = table[i]
            self._hash[b] = h
            self._cached[h] = b
            if not run:
                run_parent = parent
            run.append(h)
            run_tokens.extend(tokens)
        self._emit_stored(run, run_parent, run_tokens, salt)

    def rename(self, seq_id: str, new_id: str) -> None:
        """Move ``seq_id``'s blocks to ``new_id`` (e.g. to hold them under a lease while the request id
        is reused). ``KeyError`` if ``seq_id`` holds none, ``ValueError`` if ``new_id`` holds some."""
        if new_id in self._tables:
            raise ValueError(f"sequence {new_id!r} already holds blocks")
        self._tables[new_id] = self._tables.pop(seq_id)
        self._chain[new_id] = self._chain.pop(seq_id)
        self._salt[new_id] = self._salt.pop(seq_id)

    def free(self, seq_id: str) -> None:
        """Drop ``seq_id``'s table. Its blocks stay cached (evictable) until their space is needed;
        later blocks of the sequence are evicted before earlier ones. ``KeyError`` if unknown."""
        table = self._tables.pop(seq_id)
        del self._chain[seq_id], self._salt[seq_id]
        for b in reversed(table):
            self._ref[b] -= 1
            if self._ref[b] < 0:
                raise AssertionError(f"block {b} freed more often than taken")
            if self._ref[b] == 0:
                self._free[b] = None
                if self._hash[b] is None:
                    self._free.move_to_end(b, last=False)

    # ----------------------------------------------------------------- events
    def take_events(self) -> tuple[KvEvent, ...]:
        """Events since the last call, oldest first."""
        events, self._pending = tuple(self._pending), []
        return events

    def drain_events(self, timestamp: float) -> KvEventBatch | None:
        """Pending events as one batch, numbered 0, 1, 2, ...; None (no number used) if there are none."""
        if not self._pending:
            return None
        batch = KvEventBatch(seq=self._next_seq, timestamp=timestamp, events=self.take_events())
        self._next_seq += 1
        return batch

    # ----------------------------------------------------------------- internals
    def _match(self, token_ids: Sequence[int], salt: str | None) -> list[tuple[int, int]]:
        if not self.enable_caching:
            return []
        hits: list[tuple[int, int]] = []
        parent, bs = None, self.block_size
        for i in range(max(len(token_ids) - 1, 0) // bs):
            h = block_hash(parent, token_ids[i * bs:(i + 1) * bs], salt if i == 0 else None)
            b = self._cached.get(h)
            if b is None:
                break
            hits.append((h, b))
            parent = h
        return hits

    def _take(self, n: int) -> list[int]:
        """Pop ``n`` blocks off the head of the free list, evicting cached ones (one ``BlockRemoved``)."""
        taken, evicted = [], []
        for _ in range(n):
            b, _ = self._free.popitem(last=False)
            h = self._hash[b]
            if h is not None:
                self._hash[b] = None
                del self._cached[h]
                evicted.append(h)
            self._ref[b] = 1
            taken.append(b)
        if evicted:
            self._pending.append(BlockRemoved(block_hashes=tuple(evicted)))
        return taken

    def _emit_stored(self, run: list[int], parent: int | None, tokens: list[int], salt: str | None) -> None:
        if run:
            self._pending.append(BlockStored(
                block_hashes=tuple(run), parent_block_hash=parent, token_ids=tuple(tokens),
                block_size=self.block_size, cache_salt=salt if parent is None else None))
