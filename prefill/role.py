"""What a prefill worker does with its engine: one token, blocks kept, a typed handoff returned."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from protocol.types import SamplingSpec
from transfer.handoff import KVHandoff
from worker.engine import EngineAdapter, EngineRequest


class PrefillFailed(RuntimeError):
    """The engine finished the prompt without holding its blocks for a remote decode."""


@dataclass(frozen=True)
class PrefillResult:
    handoff: KVHandoff
    seconds: float


async def run_prefill(
    engine: EngineAdapter,
    request_id: str,
    prompt_token_ids: tuple[int, ...],
    sampling: SamplingSpec,
    cache_salt: str | None = None,
) -> PrefillResult:
    """Run ``prompt_token_ids`` with ``max_tokens=1`` and ``remote_decode``; return the handoff.

    The engine keeps the prompt's KV blocks until a decode worker pulls them or the lease expires.
    Raises ``PrefillFailed`` if the engine returned no handoff (e.g. the request was aborted).
    """
    started = time.perf_counter()
    request = EngineRequest(
        request_id=request_id,
        prompt_token_ids=prompt_token_ids,
        sampling=replace(sampling, max_tokens=1),
        remote_decode=True,
        cache_salt=cache_salt,
    )
    handoff: KVHandoff | None = None
    first_token = -1
    reason: str | None = None
    async for delta in engine.generate(request):
        if delta.token_ids and first_token < 0:
            first_token = delta.token_ids[0]
        if delta.finished:
            handoff = delta.handoff
            reason = delta.finish_reason
    if handoff is None:
        raise PrefillFailed(f"prefill of {request_id} returned no KV handoff (finish reason {reason})")
    if handoff.first_token < 0 and first_token >= 0:
        handoff = replace(handoff, first_token=first_token)
    return PrefillResult(handoff=handoff, seconds=time.perf_counter() - started)
