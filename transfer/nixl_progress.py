"""Give NIXL's progress thread a sleep between polls, so an idle agent does not burn a core.

NIXL's Python API (1.5) builds every agent with ``pthrDelay = 0``: its progress thread spins. On a
GPU node with cores to spare that buys microseconds; on a 2-core CPU host two idle workers burned
about 0.9 core between them (measured: 2.9 CPU-s per 3 s for one idle agent, 0.09 with 1 ms delay).

pdserve registers ``install`` as a vLLM general plugin (``vllm.general_plugins`` entry point), which
vLLM calls in every process it starts, engine core and model workers included. It does nothing
unless ``PDSERVE_NIXL_PROGRESS_DELAY_US`` is set to a positive number of microseconds.

Importing NIXL here comes before vLLM's own import, which first sets ``UCX_RCACHE_MAX_UNRELEASED=1024``
(vLLM's guard against a UCX registration-cache leak) unless NIXL is already imported; so ``install``
sets that default itself before it imports NIXL.
"""

from __future__ import annotations

import importlib
import logging
import os

ENV = "PDSERVE_NIXL_PROGRESS_DELAY_US"
RCACHE_ENV, RCACHE_MAX_UNRELEASED = "UCX_RCACHE_MAX_UNRELEASED", "1024"  # vLLM's value (nixl_utils.py)
log = logging.getLogger(__name__)


def install() -> None:
    """Patch the NIXL bindings' agent config so ``pthrDelay`` is at least the configured delay.

    Idempotent; silently does nothing when NIXL is not installed or the variable is unset. Before it
    imports NIXL it sets ``UCX_RCACHE_MAX_UNRELEASED`` in this process's environment unless it is set.
    """
    delay = int(os.environ.get(ENV, "0") or 0)
    if delay <= 0:
        return
    os.environ.setdefault(RCACHE_ENV, RCACHE_MAX_UNRELEASED)
    for package in ("nixl_cu12", "nixl_cu13", "nixl"):
        try:
            api = importlib.import_module(f"{package}._api")
        except ImportError:
            continue
        _patch(api, delay)


def _patch(api: object, delay: int) -> None:
    bindings = getattr(api, "nixlBind", None)
    base = getattr(bindings, "nixlAgentConfig", None)
    if base is None or getattr(base, "_pdserve_delay", None) is not None:
        return

    def get_delay(self: object) -> int:
        return int(base.pthrDelay.__get__(self))

    def set_delay(self: object, value: int) -> None:
        base.pthrDelay.__set__(self, max(int(value), delay))

    patched = type("PdserveAgentConfig", (base,), {"pthrDelay": property(get_delay, set_delay),
                                                    "_pdserve_delay": delay})
    bindings.nixlAgentConfig = patched  # type: ignore[union-attr]
    log.info("NIXL progress thread delay set to %d us", delay)
