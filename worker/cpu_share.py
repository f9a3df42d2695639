"""Each vLLM CPU worker computes on its own cores: which ones, and how the process is held to them.

The launch plan gives every vLLM worker on a CPU host a ``CpuShare`` (its slot among the workers that
share the host, and how many cores to leave to the front end); the worker turns it into a core list
from the cores its own node lets it use (``os.sched_getaffinity``), so the split is computed where the
cores are. ``pin`` then holds the whole worker process to those cores (every thread and child it
starts afterwards inherits the mask: vLLM's engine core and model runner included) and tells vLLM to
bind its OpenMP threads there (``VLLM_CPU_OMP_THREADS_BIND``, ``OMP_NUM_THREADS``). Left on ``auto``,
two vLLM engines on a 2-core host both put their compute threads on one core (measured: 1.6-2 s per
token instead of ~0.05-0.08 s).

A pinned worker with one rank also runs its model inside vLLM's engine-core process
(``one_process_engine``): sharing one core, a separate model-runner process and the engine core
hand every step over shared memory and each polls for the other, which made a decode step 17% slower
than plain vLLM's (whose engine core polls on another core); in one process it is 7% (A/B below).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping, Sequence

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


ONE_PROCESS_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"
"""vLLM's CPU platform turns the ``uni`` executor into ``mp`` unless this is ``0``. ``AsyncLLM`` starts its
engine core in a process of its own either way; the variable only lets the model run in that process."""


def one_process_engine(env: MutableMapping[str, str], engine_kwargs: Mapping[str, object]) -> dict[str, object]:
    """The ``AsyncEngineArgs`` that run a pinned worker's model in vLLM's engine-core process (executor
    ``uni``), and ``env`` (mutated) set so vLLM's CPU platform keeps that executor.

    Measured (plain vLLM, SmolLM2-135M, 48-token answers, 3 interleaved rounds on the 2-core host): every
    thread on one core, TPOT 144 ms with vLLM's default separate model runner, 132 ms in one process;
    plain vLLM whose OpenMP thread alone is bound, its engine core polling on the other core, 123 ms.

    Returns ``{}`` and leaves ``env`` alone when the worker is not pinned (``PDSERVE_CPU_CORES`` unset:
    a GPU worker, or the operator's own ``VLLM_CPU_OMP_THREADS_BIND``), when the engine has more than
    one rank, or when the engine arguments name an executor themselves.
    """
    if not env.get(CORES_ENV) or "distributed_executor_backend" in engine_kwargs:
        return {}
    if int(str(engine_kwargs.get("tensor_parallel_size", 1))) != 1:
        return {}
    env[ONE_PROCESS_ENV] = "0"
    return {"distributed_executor_backend": "uni"}
