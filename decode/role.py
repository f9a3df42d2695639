"""What a decode worker does with its engine: pull the handoff's blocks (if any), then stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

from protocol.types import SamplingSpec
from transfer.handoff import KVHandoff
from worker.engine import EngineAdapter, EngineRequest, TokenDelta


def stream_decode(
    engine: EngineAdapter,
    request_id: str,
    prompt_token_ids: tuple[int, ...],
    sampling: SamplingSpec,
    handoff: KVHandoff | None,
    cache_salt: str | None = None,
) -> AsyncIterator[TokenDelta]:
    """Token deltas for the whole answer. With a ``handoff`` the engine pulls the prompt's KV from
    the prefill worker over NIXL; without one it prefills locally (conditional disaggregation or a
    colocated pool). Closing the iterator early aborts the request in the engine."""
    request = EngineRequest(
        request_id=request_id,
        prompt_token_ids=prompt_token_ids,
        sampling=sampling,
        handoff=handoff,
        cache_salt=cache_salt,
    )
    return engine.generate(request)
