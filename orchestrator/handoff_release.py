"""Freeing a KV handoff that no decode worker will read, as early as the prefill worker's engine allows.

A finished remote prefill leaves the prompt's KV blocks held on its prefill worker for the decode worker
that will pull them, until the pull's completion notice or the lease's end. When the decode side will
never pull (the client left before the first token, the answer failed first), ``HandoffReleaser.release``
frees them now, by the rules of the prefill worker's engine kind (``RELEASE_BY_ENGINE``):

* ``abort``: aborting the finished prefill frees the blocks it holds (pdserve's simulated engine; for a
  prefill still running, any engine stops it);
* ``read``: the engine frees them only once a decode engine has read them, or at lease expiry, and
  ignores an abort of a request that has finished (vLLM's NixlConnector). A decode worker then reads the
  handoff in a one-token Generate call whose answer is dropped; the read's completion notice, which
  vLLM's decode side sends to the prefill side, frees the blocks there. The read runs in the background,
  bounded by the server's first-token timeout; if no decode worker is routable, the lease frees them.

An engine kind missing from the registry gets both rules. Owned by the request flow, on its event loop;
``close`` cancels the reads still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Literal

from orchestrator.config import ServerConfig
from orchestrator.metrics import Metrics
from orchestrator.placement import FlowRequest, Placement
from orchestrator.pools.pool import WorkerHandle, WorkerPool
from protocol.types import GenerateCall, SamplingSpec

log = logging.getLogger(__name__)

ReleaseRule = Literal["abort", "read"]
RELEASE_BY_ENGINE: dict[str, tuple[ReleaseRule, ...]] = {
    "sim": ("abort",),
    "vllm": ("abort", "read"),
}
UNKNOWN_ENGINE_RULES: tuple[ReleaseRule, ...] = ("abort", "read")


async def abort_on(metrics: Metrics, handle: WorkerHandle, request_id: str, role: str) -> None:
    """Abort ``request_id`` on ``handle``'s worker, counted under ``role``; never raises, and finishes
    even if the caller is being cancelled."""
    metrics.aborts.labels(role).inc()
    with contextlib.suppress(Exception):
        await asyncio.shield(handle.client.abort(request_id))


def release_read_call(req: FlowRequest, placement: Placement) -> GenerateCall:
    """The one-token Generate call that reads ``placement``'s handoff only to have it freed."""
    return GenerateCall(request_id=f"{req.request_id}-release", prompt_token_ids=req.prompt,
                        sampling=SamplingSpec(max_tokens=1, temperature=0.0), cache_salt=req.cache_salt,
                        handoff=placement.handoff, lora=req.lora)


class HandoffReleaser:
    def __init__(self, prefill: WorkerPool | None, decode: WorkerPool, metrics: Metrics,
                 server: ServerConfig) -> None:
        self._prefill = prefill
        self._decode = decode
        self._metrics = metrics
        self._server = server
        self._reads: set[asyncio.Task[None]] = set()

    async def release(self, req: FlowRequest, placement: Placement, prefill_request_id: str) -> None:
        """Free ``placement``'s handoff on its prefill worker (whose request id there was
        ``prefill_request_id``). A no-op without a handoff or once that worker has left its pool."""
        if placement.handoff is None or placement.prefill_worker is None or self._prefill is None:
            return
        source = self._prefill.find(placement.prefill_worker)
        if source is None:
            return
        self._metrics.abandoned_leases.inc()
        rules = RELEASE_BY_ENGINE.get(source.description.engine_kind, UNKNOWN_ENGINE_RULES)
        if "abort" in rules:
            await abort_on(self._metrics, source, prefill_request_id, "prefill")
        if "read" in rules:
            reader = self._reader(placement.decode_worker)
            if reader is not None:
                task = asyncio.create_task(self._read(reader, release_read_call(req, placement)),
                                           name=f"release-{req.request_id}")
                self._reads.add(task)
                task.add_done_callback(self._reads.discard)

    def _reader(self, preferred: str) -> WorkerHandle | None:
        """The placement's decode worker if it can still take work, else any routable one."""
        handle = self._decode.find(preferred)
        if handle is not None and handle.routable:
            return handle
        return next(iter(self._decode.routable()), None)

    async def _read(self, reader: WorkerHandle, call: GenerateCall) -> None:
        timeout = self._server.first_token_timeout_s
        try:
            async with asyncio.timeout(timeout):
                async for _ in reader.client.generate(call, timeout, self._server.inter_token_timeout_s,
                                                      deadline_s=timeout):
                    pass
        except Exception as exc:
            log.info("release read of %s on %s failed (the lease will free it): %s", call.request_id,
                     reader.worker_id, exc)

    async def close(self) -> None:
        """Cancel the release reads still running and wait for them."""
        for task in list(self._reads):
            task.cancel()
        await asyncio.gather(*self._reads, return_exceptions=True)
