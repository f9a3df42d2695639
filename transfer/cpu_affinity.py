"""Keep vLLM's NIXL connector from moving a pinned worker's compute thread off its cores.

On CPU, vLLM's NixlConnector reserves "the last core of each NUMA node" for KV transfers by calling
``os.sched_setaffinity(0, [those cores])`` on the model runner's main thread, which is also its
OpenMP master thread. With two engines on a 2-core host that moved both engines' compute onto core 1
while core 0 idled. pdserve pins each worker to its own cores (``worker.cpu_share``) and names them in
``PDSERVE_CPU_CORES``; this vLLM general plugin (``vllm.general_plugins`` entry point, run in every
process vLLM starts) then clamps every ``os.sched_setaffinity`` call of the process to those cores:
the requested cores that are the worker's own, or all of the worker's cores when none is.
It does nothing when the variable is unset.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable

ENV = "PDSERVE_CPU_CORES"
log = logging.getLogger(__name__)


def clamp(requested: Iterable[int], owned: frozenset[int]) -> set[int]:
    """The cores of ``requested`` that are ``owned``, or all ``owned`` cores when none is. Pure."""
    inside = set(requested) & owned
    return inside or set(owned)


def install() -> None:
    """Wrap ``os.sched_setaffinity`` with ``clamp`` for this process. Idempotent."""
    listed = os.environ.get(ENV, "")
    if not listed or getattr(os.sched_setaffinity, "_pdserve_owned", None) is not None:
        return
    owned = frozenset(int(c) for c in listed.split(","))
    original: Callable[[int, Iterable[int]], None] = os.sched_setaffinity

    def sched_setaffinity(pid: int, mask: Iterable[int], /) -> None:
        wanted = set(mask)
        allowed = clamp(wanted, owned)
        if allowed != wanted:
            log.info("pdserve: affinity %s requested, kept to this worker's cores %s", sorted(wanted),
                     sorted(allowed))
        original(pid, allowed)

    sched_setaffinity._pdserve_owned = owned  # type: ignore[attr-defined]
    os.sched_setaffinity = sched_setaffinity
