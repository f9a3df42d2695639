"""Which pdserve block hashes each worker holds, kept up to date from the engines' KV cache events.

Engines name blocks by their own hashes; pdserve re-hashes the token ids each ``BlockStored`` carries with
``hashing.block_hash_list``, chaining from the parent block's pdserve hash (or from the tenant salt for a
first block), and keeps the engine hashes only as opaque ids to honour ``BlockRemoved``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from protocol.types import AllBlocksCleared, BlockRemoved, BlockStored, KvEventBatch

from .hashing import block_hash_list, make_salt
from .mask_table import MaskTable


@dataclass(frozen=True)
class ApplyResult:
    """What one ``apply`` did. ``skipped``: blocks ignored because their parent was unknown;
    ``cleared``: blocks dropped by ``AllBlocksCleared`` or by a resync; ``resynced``: a ``seq`` gap was
    seen, so everything known of the worker was dropped before the batch was applied."""

    stored: int = 0
    removed: int = 0
    skipped: int = 0
    cleared: int = 0
    resynced: bool = False


@dataclass(frozen=True)
class IndexStats:
    """A snapshot of the index: ``blocks`` counts (worker, block) pairs, ``hashes`` distinct blocks."""

    workers: int
    blocks: int
    hashes: int
    resyncs: int
    skipped_blocks: int


@dataclass
class _Worker:
    """Per-worker bookkeeping, owned by ``PrefixIndex``."""

    bit: int
    engine_to_pd: dict[int, int] = field(default_factory=dict)
    # pdserve hashes held under more than one engine hash (e.g. engine-side extra keys): count - 1.
    extra_refs: dict[int, int] = field(default_factory=dict)
    last_seq: int | None = None


class PrefixIndex:
    """Exact prefix index fed by KV events. Mutated only by ``apply`` and ``remove_worker``; not
    thread-safe (one owner applies events and routes). No I/O, no clock."""

    def __init__(self, model: str, block_size: int) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.model = model
        self.block_size = block_size
        self._table = MaskTable()
        self._workers: dict[str, _Worker] = {}
        self._resyncs = 0
        self._skipped = 0

    # -- events ------------------------------------------------------------------------------------
    def apply(self, worker_id: str, batch: KvEventBatch) -> ApplyResult:
        """Apply one batch of the worker's events, in order.

        A ``seq`` other than the previous one + 1 means events were lost: the worker's blocks are dropped
        (``resynced=True``) and the batch is then applied. A ``BlockStored`` whose parent is unknown is
        skipped (counted in ``skipped``). Raises ``ValueError``, before changing anything, when a
        ``BlockStored`` has another block size or a token count that is not ``len(block_hashes)`` blocks.
        """
        for event in batch.events:
            if isinstance(event, BlockStored):
                self._check(event)
        worker = self._worker(worker_id)
        resynced = worker.last_seq is not None and batch.seq != worker.last_seq + 1
        cleared = self._drop_blocks(worker) if resynced else 0
        self._resyncs += resynced
        worker.last_seq = batch.seq
        stored = removed = skipped = 0
        for event in batch.events:
            if isinstance(event, BlockStored):
                added, missing = self._store(worker, event)
                stored += added
                skipped += missing
            elif isinstance(event, BlockRemoved):
                removed += sum(self._unref(worker, e) for e in event.block_hashes)
            elif isinstance(event, AllBlocksCleared):
                cleared += self._drop_blocks(worker)
        self._skipped += skipped
        return ApplyResult(stored, removed, skipped, cleared, bool(resynced))

    def remove_worker(self, worker_id: str) -> int:
        """Forget the worker entirely (it left the pool); returns how many blocks were dropped."""
        worker = self._workers.pop(worker_id, None)
        if worker is None:
            return 0
        dropped = self._drop_blocks(worker)
        self._table.release(worker_id)
        return dropped

    # -- queries -----------------------------------------------------------------------------------
    def match(self, block_hashes: Sequence[int], *, now: float | None = None) -> dict[str, int]:
        """Worker -> longest run of the prompt's leading blocks it holds (absent means 0). ``now`` is
        accepted for symmetry with ``ApproxPrefixIndex`` and ignored. Reads only."""
        return self._table.match(block_hashes)

    def observe_route(self, worker_id: str, block_hashes: Sequence[int], now: float) -> None:
        """Routing does not change an event-fed index: the engine's events will."""

    @property
    def size(self) -> int:
        """Indexed (worker, block) pairs."""
        return self._table.num_entries

    def stats(self) -> IndexStats:
        return IndexStats(len(self._workers), self._table.num_entries, self._table.num_hashes,
                          self._resyncs, self._skipped)

    # -- internals ---------------------------------------------------------------------------------
    def _check(self, event: BlockStored) -> None:
        if event.block_size != self.block_size:
            raise ValueError(f"BlockStored block_size {event.block_size} != index block_size {self.block_size}")
        if len(event.token_ids) != len(event.block_hashes) * event.block_size:
            raise ValueError(f"BlockStored has {len(event.token_ids)} token ids for "
                             f"{len(event.block_hashes)} blocks of {event.block_size}")

    def _worker(self, worker_id: str) -> _Worker:
        worker = self._workers.get(worker_id)
        if worker is None:
            worker = self._workers[worker_id] = _Worker(bit=self._table.bit(worker_id))
        return worker

    def _store(self, worker: _Worker, event: BlockStored) -> tuple[int, int]:
        """Index the event's blocks; returns (newly indexed, skipped)."""
        if not event.block_hashes:
            return 0, 0
        parent: int | None = None
        if event.parent_block_hash is not None:
            parent = worker.engine_to_pd.get(event.parent_block_hash)
            if parent is None:
                return 0, len(event.block_hashes)
        salt = make_salt(self.model, event.cache_salt, event.lora) if parent is None else b""
        pd_hashes = block_hash_list(event.token_ids, self.block_size, salt, parent=parent)
        added = 0
        table, engine_to_pd, extra = self._table, worker.engine_to_pd, worker.extra_refs
        for engine_hash, pd_hash in zip(event.block_hashes, pd_hashes, strict=True):
            previous = engine_to_pd.get(engine_hash)
            if previous == pd_hash:
                continue
            if previous is not None:
                self._unref(worker, engine_hash)
            engine_to_pd[engine_hash] = pd_hash
            if table.add(pd_hash, worker.bit):
                added += 1
            else:
                extra[pd_hash] = extra.get(pd_hash, 0) + 1
        return added, 0

    def _unref(self, worker: _Worker, engine_hash: int) -> bool:
        """Drop one engine hash; True when its pdserve block left the worker."""
        pd_hash = worker.engine_to_pd.pop(engine_hash, None)
        if pd_hash is None:
            return False
        refs = worker.extra_refs.get(pd_hash)
        if refs:
            if refs == 1:
                del worker.extra_refs[pd_hash]
            else:
                worker.extra_refs[pd_hash] = refs - 1
            return False
        return self._table.discard(pd_hash, worker.bit)

    def _drop_blocks(self, worker: _Worker) -> int:
        dropped = self._table.discard_all(set(worker.engine_to_pd.values()), worker.bit)
        worker.engine_to_pd.clear()
        worker.extra_refs.clear()
        return dropped
