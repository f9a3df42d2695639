"""What a prefill worker does with its engine: one token, blocks kept, a typed handoff returned.
Registers the ``prefill`` role (``worker.roles``) when imported."""

from __future__ import annotations

from dataclasses import replace

from protocol.types import KVHandoff, PrefillCall
from worker.engine import EngineAdapter, EngineRequest
from worker.roles import DutyFailed, Role, register_role


async def run_prefill(engine: EngineAdapter, call: PrefillCall) -> KVHandoff:
    """Run the call's prompt with ``max_tokens=1`` and ``remote_decode``; return the handoff.

    The engine keeps the prompt's KV blocks until a decode worker pulls them or the lease expires.
    The handoff's ``first_token`` is the sampled token (filled in here if the engine left it unset), and
    ``first_token_stops`` says whether the engine finished on it with reason ``stop`` (EOS or a stop id)
    rather than at the one-token cap.
    Raises ``DutyFailed`` if the engine returned no handoff (e.g. the request was aborted) and
    ``ValueError`` if the engine rejected the request.
    """
    request = EngineRequest(
        request_id=call.request_id,
        prompt_token_ids=call.prompt_token_ids,
        sampling=replace(call.sampling, max_tokens=1),
        remote_decode=True,
        cache_salt=call.cache_salt,
        lora=call.lora,
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
        raise DutyFailed(f"prefill of {call.request_id} returned no KV handoff (finish reason {reason})")
    if handoff.first_token < 0 and first_token >= 0:
        handoff = replace(handoff, first_token=first_token)
    return replace(handoff, first_token_stops=reason == "stop")


ROLE = register_role(Role("prefill", prefill=run_prefill))
