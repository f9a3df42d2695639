"""Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2018) for session affinity.

Each worker owns ``vnodes`` points on a 64-bit ring. A session key goes to the first worker clockwise from
its point whose load, counting this request, stays within ``ceil(load_factor * average load)``. A session
therefore sticks to one worker while that worker is not overloaded, and when workers join or leave only
the keys near their points move.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Mapping, Sequence

import xxhash


def _point(text: str) -> int:
    return xxhash.xxh3_64_intdigest(text.encode("utf-8"))


class HashRing:
    """An immutable ring over a set of worker ids. Raises ``ValueError`` when empty or ``vnodes < 1``."""

    def __init__(self, worker_ids: Sequence[str], vnodes: int = 64) -> None:
        if not worker_ids or vnodes < 1:
            raise ValueError("a ring needs at least one worker and vnodes >= 1")
        points = sorted((_point(f"{w}#{i}"), w) for w in set(worker_ids) for i in range(vnodes))
        self._points = [p for p, _ in points]
        self._owners = [w for _, w in points]
        self.size = len(set(worker_ids))

    def walk(self, key: str) -> Iterator[str]:
        """Distinct workers in clockwise order from the key's point, each once."""
        start = bisect.bisect_left(self._points, _point(key))
        seen: set[str] = set()
        n = len(self._owners)
        for i in range(n):
            owner = self._owners[(start + i) % n]
            if owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == self.size:
                    return


def bounded_load_choice(ring: HashRing, key: str, loads: Mapping[str, int], load_factor: float) -> str:
    """The worker for ``key``: first clockwise whose ``load + 1 <= ceil(load_factor * (total + 1) / n)``.

    ``loads`` must cover exactly the ring's workers; ``load_factor`` must be >= 1 (then one always fits).
    """
    cap = math.ceil(load_factor * (sum(loads.values()) + 1) / len(loads))
    first = None
    for worker in ring.walk(key):
        first = first or worker
        if loads[worker] + 1 <= cap:
            return worker
    assert first is not None  # unreachable with load_factor >= 1: not every worker can exceed the average
    return first
