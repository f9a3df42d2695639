"""The prefill's first token opens the answer; the decode worker continues after it. Pure rules, no I/O.

A prefill worker samples the answer's first token anyway (it runs the prompt with ``max_tokens=1``), and
the handoff carries it. Sending it to the client as soon as the prefill returns takes the handoff (the
KV pull and the decode engine's first step) out of the time to first token. The decode worker then
continues from that token, as SGLang's P/D does: its prompt is the prompt followed by the token and its
budget one token smaller, so its first step computes that token's KV and samples the second token,
where it would otherwise recompute the last prompt token only to sample the first token again.

``lead_chunk`` says when this gives exactly the tokens one engine would have produced, and otherwise
returns None (the decode worker samples the first token itself, as before):

* nothing in the sampling depends on which tokens were generated before: no presence or frequency
  penalty (they count output tokens only; the repetition penalty counts prompt and output alike), no
  structured output (its grammar would restart after the first token), no seed unless greedy (the
  decode's generator would restart), and no logprobs (the prefill returns none);
* the first token lands strictly inside the prompt's last KV block. vLLM's decode side allocates blocks
  for its whole prompt and pulls as many from the prefill worker, which holds blocks for the prompt
  alone: after a prompt that fills its last block, the token would need one block more. A token that
  fills the block would let the decode side cache that block before its last slot is written.
"""

from __future__ import annotations

from dataclasses import replace

from protocol.types import GenerateCall, KVHandoff, SamplingSpec, TokenChunk


def lead_chunk(sampling: SamplingSpec, handoff: KVHandoff | None, block_size: int) -> TokenChunk | None:
    """The chunk that opens the answer with the prefill's first token, or None where the decode worker
    must sample that token itself (see the module's rules). The chunk is the answer's last one when the
    token ended it (``first_token_stops``: finish reason ``stop``) or the answer is one token long
    (``length``); no decode is needed then."""
    if handoff is None or handoff.first_token < 0 or handoff.prompt_tokens <= 0 or block_size <= 0:
        return None
    if handoff.prompt_tokens % block_size in (0, block_size - 1) or not _history_free(sampling):
        return None
    if handoff.first_token_stops or sampling.max_tokens <= 1:
        reason = "stop" if handoff.first_token_stops else "length"
        return TokenChunk((handoff.first_token,), finished=True, finish_reason=reason)
    return TokenChunk((handoff.first_token,))


def continuation(call: GenerateCall, lead: TokenChunk) -> GenerateCall:
    """``call`` made to continue after ``lead``'s token: that token appended to the prompt and counted in
    its ``answer_prefix``, one token less to generate and to wait for before a stop may end the answer."""
    (token,) = lead.token_ids
    sampling = replace(call.sampling, max_tokens=call.sampling.max_tokens - 1,
                       min_tokens=max(0, call.sampling.min_tokens - 1))
    return replace(call, prompt_token_ids=(*call.prompt_token_ids, token), sampling=sampling,
                   answer_prefix=call.answer_prefix + 1)


def _history_free(sampling: SamplingSpec) -> bool:
    """True when the next token's distribution depends only on the sequence so far, not on which of its
    tokens were generated nor on a random generator's state."""
    return (sampling.presence_penalty == 0.0 and sampling.frequency_penalty == 0.0
            and not sampling.json_object and sampling.json_schema is None and sampling.logprobs is None
            and (sampling.seed is None or sampling.temperature == 0.0))
