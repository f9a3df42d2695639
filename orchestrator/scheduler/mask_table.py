"""Block hash -> bitmask of the workers holding it: the data layout both prefix indexes share.

Each worker gets a small slot number; a block's entry is a Python int whose bit ``s`` is set when the
worker in slot ``s`` holds it. Matching a prompt walks its hashes once, AND-ing the masks, and stops as
soon as no worker is left, so its cost is one dict lookup per matched block, whatever the fleet size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class MaskTable:
    """Owns the hash -> mask dict and the worker <-> slot numbering. Not thread-safe; no I/O.

    Callers keep their own per-worker bookkeeping and must clear a worker's bits (``discard`` or
    ``discard_all``) before ``release`` hands its slot to another worker.
    """

    def __init__(self) -> None:
        self._masks: dict[int, int] = {}
        self._slot_of: dict[str, int] = {}
        self._worker_at: list[str | None] = []
        self._free: list[int] = []
        self._entries = 0

    # -- slots -------------------------------------------------------------------------------------
    def bit(self, worker_id: str) -> int:
        """The worker's bit (``1 << slot``), giving it a slot on first use (mutates)."""
        slot = self._slot_of.get(worker_id)
        if slot is None:
            if self._free:
                slot = self._free.pop()
                self._worker_at[slot] = worker_id
            else:
                slot = len(self._worker_at)
                self._worker_at.append(worker_id)
            self._slot_of[worker_id] = slot
        return 1 << slot

    def release(self, worker_id: str) -> None:
        """Free the worker's slot for reuse; a no-op for an unknown worker. Its bits must be clear."""
        slot = self._slot_of.pop(worker_id, None)
        if slot is not None:
            self._worker_at[slot] = None
            self._free.append(slot)

    # -- entries -----------------------------------------------------------------------------------
    def add(self, block_hash: int, bit: int) -> bool:
        """Set ``bit`` on ``block_hash``; True when it was not set before (mutates)."""
        masks = self._masks
        mask = masks.get(block_hash, 0)
        if mask & bit:
            return False
        masks[block_hash] = mask | bit
        self._entries += 1
        return True

    def discard(self, block_hash: int, bit: int) -> bool:
        """Clear ``bit`` on ``block_hash``; True when it was set (mutates; drops empty entries)."""
        masks = self._masks
        mask = masks.get(block_hash, 0)
        if not mask & bit:
            return False
        mask &= ~bit
        if mask:
            masks[block_hash] = mask
        else:
            del masks[block_hash]
        self._entries -= 1
        return True

    def discard_all(self, block_hashes: Iterable[int], bit: int) -> int:
        """Clear ``bit`` on every hash given; returns how many were set."""
        return sum(self.discard(h, bit) for h in block_hashes)

    @property
    def num_hashes(self) -> int:
        """Distinct block hashes held by at least one worker."""
        return len(self._masks)

    @property
    def num_entries(self) -> int:
        """(worker, block) pairs: the index size in blocks."""
        return self._entries

    # -- matching ----------------------------------------------------------------------------------
    def match(self, block_hashes: Sequence[int]) -> dict[str, int]:
        """For each worker holding the prompt's first block, the length in blocks of the longest run of
        consecutive prompt blocks from the start that it holds. Workers matching nothing are absent.
        Hashes must be Python ints. Reads only."""
        masks, worker_at = self._masks, self._worker_at
        result: dict[str, int] = {}
        alive = -1  # every bit: the first AND leaves exactly the holders of block 0
        depth = 0
        for h in block_hashes:
            held = masks.get(h, 0) & alive
            if held != alive:
                if depth:
                    lost = alive & ~held
                    while lost:
                        low = lost & -lost
                        result[worker_at[low.bit_length() - 1]] = depth  # type: ignore[index]
                        lost ^= low
                if not held:
                    return result
                alive = held
            depth += 1
        if depth:
            while alive:
                low = alive & -alive
                result[worker_at[low.bit_length() - 1]] = depth  # type: ignore[index]
                alive ^= low
        return result
