"""A vLLM engine dies with the pdserve worker that started it.

vLLM's engine core outlives the process that started it: when a worker is killed (``kill -9``, the OOM
killer, its Ray node stopped), its ``VLLM::EngineCore`` is re-parented to init and keeps its memory and
its pinned core (its model runner stays too: it watches only the engine core, through vLLM's death
pipe). The launcher sweeps the worker's process group when it restarts or stops the worker, but nothing
does when the launcher is gone as well.

So the worker names itself in ``PDSERVE_ENGINE_PARENT`` before it starts an engine, and this vLLM
general plugin (``vllm.general_plugins`` entry point, run in every process vLLM starts) asks the kernel
to SIGKILL each direct child of that worker when the worker dies (Linux ``PR_SET_PDEATHSIG``). The
signal follows the thread that started the child: the worker builds its engines on its main thread.
Nothing happens where the variable is unset (a plain ``vllm serve`` on the same installation).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal

ENV = "PDSERVE_ENGINE_PARENT"
_PR_SET_PDEATHSIG = 1
log = logging.getLogger(__name__)


def die_with_parent(sig: int) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent (thread) dies. Linux only;
    returns False where ``prctl`` is not available or fails."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, sig) == 0)
    return False


def install() -> None:
    """In a direct child of the worker named by ``PDSERVE_ENGINE_PARENT``: die with it (SIGKILL). A
    child whose worker is already gone exits at once. Elsewhere (the worker itself, grandchildren,
    no variable): nothing."""
    listed = os.environ.get(ENV, "")
    if not listed.isdigit() or int(listed) == os.getpid():
        return
    parent = int(listed)
    if os.getppid() != parent:  # a grandchild (vLLM's model runner follows the engine core), or orphaned
        if not _alive(parent):
            log.warning("pdserve: worker %d is gone; this vLLM process exits", parent)
            os._exit(1)
        return
    die_with_parent(signal.SIGKILL)
    if os.getppid() != parent:  # the worker died between the two checks
        os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
