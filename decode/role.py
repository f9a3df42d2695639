"""What a decode worker does with its engine: pull the handoff's blocks (if any), then stream.
Registers the ``decode`` role (``worker.roles``) when imported."""

from __future__ import annotations

from collections.abc import AsyncIterator

from protocol.types import GenerateCall, TokenChunk
from worker.engine import EngineAdapter, EngineRequest
from worker.roles import Role, register_role


def stream_decode(engine: EngineAdapter, call: GenerateCall) -> AsyncIterator[TokenChunk]:
    """Token chunks for the whole answer (the engine's deltas, which are chunks). With a ``handoff`` the
    engine pulls the prompt's KV from the prefill worker over NIXL; without one it prefills locally
    (conditional disaggregation or a colocated pool). Closing the iterator early aborts the request in
    the engine."""
    request = EngineRequest(
        request_id=call.request_id,
        prompt_token_ids=call.prompt_token_ids,
        sampling=call.sampling,
        handoff=call.handoff,
        cache_salt=call.cache_salt,
        lora=call.lora,
        answer_prefix=call.answer_prefix,
    )
    return engine.generate(request)


ROLE = register_role(Role("decode", generate=stream_decode))
