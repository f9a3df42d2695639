"""A decode stream that gives up on a handoff whose prefill worker died before the pull was done.

vLLM's decode side reads a handoff with NIXL from the prefill worker; when that worker's process dies
mid-pull, the read can hang until pdserve's first-token timeout (a minute by default). The orchestrator
knows sooner: the membership supervisor (or a refused call) marks the prefill worker down, and a restart
gives its handle a new client. ``until_source_lost`` watches for either while no token has come, and then
ends the stream with ``WorkerError(void_reason="source_gone")``, which the flow deals with like any
handoff the decode worker could not read (``transfer.on_pull_failure``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

from orchestrator.errors import WorkerError
from orchestrator.pools.pool import WorkerHandle
from protocol.types import TokenChunk


async def until_source_lost(chunks: AsyncIterator[TokenChunk], source: WorkerHandle | None, decode_worker: str,
                            poll_s: float = 0.2) -> AsyncGenerator[TokenChunk, None]:
    """``chunks``, unchanged. Before the first chunk carrying tokens, raises ``WorkerError`` (void, reason
    ``source_gone``) within ``poll_s`` of ``source`` (the handoff's prefill worker; None: no handoff) being
    marked down or replaced by a restart. Cancels the pending read and closes ``chunks`` when it ends."""
    it = aiter(chunks)
    client = source.client if source is not None else None
    try:
        while source is not None:  # until the first chunk with tokens: the handoff was read
            pending = asyncio.ensure_future(anext(it))
            try:
                while not pending.done():
                    await asyncio.wait({pending}, timeout=poll_s)
                    if not pending.done() and (not source.healthy or source.client is not client):
                        raise WorkerError(decode_worker, f"the prefill worker {source.worker_id} holding this "
                                          "request's KV went down before the decode read it",
                                          void_reason="source_gone")
            finally:
                if not pending.done():
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
                        await pending
            try:
                chunk = pending.result()
            except StopAsyncIteration:
                return
            yield chunk
            if chunk.token_ids:
                break
        async for chunk in it:
            yield chunk
    finally:
        close = getattr(it, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
