"""Each vLLM CPU worker computes on its own cores: which ones, and how the process is held to them.

The launch plan gives every vLLM worker on a CPU host a ``CpuShare`` (its slot among the workers that
share the host, and how many cores to leave to the front end); the worker turns it into a core list
from the cores its own node lets it use (``os.sched_getaffinity``), so the split is computed where the
cores are. ``pin`` then holds the whole worker process to those cores (every thread and child it
starts afterwards inherits the mask: vLLM's engine core and model runner included) and tells vLLM to
bind its OpenMP threads there (``VLLM_CPU_OMP_THREADS_BIND``, ``OMP_NUM_THREADS``). Left on ``auto``,
two vLLM engines on a 2-core host both put their compute threads on one core (measured: 1.6-2 s per
token instead of ~0.05-0.08 s).
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping, Sequence

from protocol.launch import CpuShare

CORES_ENV = "PDSERVE_CPU_CORES"
"""Comma-separated cores a pinned worker owns (read by ``transfer.cpu_affinity`` inside vLLM)."""

log = logging.getLogger(__name__)


def cores_for(share: CpuShare, available: Sequence[int]) -> list[int]:
    """The cores of ``share`` out of ``available`` (the node's usable cores). Pure.

    Each of ``share.slots`` workers gets an equal, disjoint, contiguous run of cores. The last
    ``share.frontend_cores`` cores are kept for the front end only while every worker still gets a
    core; with fewer cores than workers, workers share cores round-robin (one core each).
    """
    cores = sorted(set(available))
    if not cores:
        raise ValueError("no cores available")
    usable = len(cores) - share.frontend_cores
    if usable < share.slots:
        usable = len(cores)
    if usable < share.slots:
        return [cores[share.slot % len(cores)]]
    per_worker = usable // share.slots
    return cores[share.slot * per_worker:(share.slot + 1) * per_worker]


def pin(share: CpuShare, env: MutableMapping[str, str]) -> list[int]:
    """Hold this process (its calling thread and everything it starts later) to the share's cores and
    set the OpenMP binding for vLLM in ``env`` (mutated). A ``VLLM_CPU_OMP_THREADS_BIND`` already in
    ``env`` (set in the config's ``engine.env``) is the operator's choice: then nothing is pinned and
    ``[]`` is returned. Call before any other thread starts. Returns the cores pinned."""
    if env.get("VLLM_CPU_OMP_THREADS_BIND", "auto") != "auto":
        log.info("VLLM_CPU_OMP_THREADS_BIND=%s set by the config: not pinning", env["VLLM_CPU_OMP_THREADS_BIND"])
        return []
    cores = cores_for(share, sorted(os.sched_getaffinity(0)))
    listed = ",".join(str(c) for c in cores)
    env["VLLM_CPU_OMP_THREADS_BIND"] = listed
    env.setdefault("OMP_NUM_THREADS", str(len(cores)))
    env[CORES_ENV] = listed
    os.sched_setaffinity(0, cores)
    log.info("pinned to cores %s (slot %d of %d)", listed, share.slot, share.slots)
    return cores
