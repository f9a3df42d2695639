"""The prefill's first token as the answer's lead: when it applies, how the decode call continues."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.lead_token import continuation, lead_chunk
from protocol.types import GenerateCall, KVHandoff, SamplingSpec, TokenChunk

BLOCK = 32
GREEDY = SamplingSpec(max_tokens=16, temperature=0.0)


def handoff(prompt_tokens: int = 200, first: int = 77, stops: bool = False) -> KVHandoff:
    blocks = -(-prompt_tokens // BLOCK)
    return KVHandoff(engine_id="p0", block_ids=(tuple(range(blocks)),), host="127.0.0.1", port=5600,
                     first_token=first, prompt_tokens=prompt_tokens, first_token_stops=stops)


def test_the_first_token_leads_and_the_decode_continues_after_it() -> None:
    lead = lead_chunk(GREEDY, handoff(), BLOCK)
    assert lead == TokenChunk((77,))
    call = GenerateCall("r-d", tuple(range(200)), replace(GREEDY, min_tokens=3), handoff=handoff())
    cont = continuation(call, lead)
    assert cont.prompt_token_ids == (*range(200), 77)
    assert (cont.sampling.max_tokens, cont.sampling.min_tokens) == (15, 2)
    assert (cont.handoff, cont.request_id, cont.sampling.temperature) == (call.handoff, "r-d", 0.0)
    assert continuation(call, lead).sampling.min_tokens == 2 and call.sampling.min_tokens == 3  # not mutated


@pytest.mark.parametrize(("stops", "max_tokens", "reason"), [(True, 16, "stop"), (False, 1, "length"),
                                                              (True, 1, "stop")])
def test_a_first_token_that_ends_the_answer_is_its_last_chunk(stops: bool, max_tokens: int, reason: str) -> None:
    lead = lead_chunk(replace(GREEDY, max_tokens=max_tokens), handoff(stops=stops), BLOCK)
    assert lead == TokenChunk((77,), finished=True, finish_reason=reason)


@pytest.mark.parametrize("prompt_tokens", [BLOCK * 6, BLOCK * 6 - 1, BLOCK])
def test_no_lead_when_the_token_would_start_or_fill_a_kv_block(prompt_tokens: int) -> None:
    # P % block == 0: the decode side would need one block more than the prefill holds;
    # P % block == block - 1: the token would complete a block the decode side caches before writing it.
    assert lead_chunk(GREEDY, handoff(prompt_tokens), BLOCK) is None
    assert lead_chunk(GREEDY, handoff(prompt_tokens - 2), BLOCK) is not None


@pytest.mark.parametrize("sampling", [
    replace(GREEDY, presence_penalty=0.5), replace(GREEDY, frequency_penalty=0.1), replace(GREEDY, logprobs=2),
    replace(GREEDY, json_object=True), replace(GREEDY, json_schema='{"type": "object"}'),
    SamplingSpec(max_tokens=16, temperature=0.7, seed=3),
])
def test_no_lead_when_sampling_depends_on_what_was_generated(sampling: SamplingSpec) -> None:
    assert lead_chunk(sampling, handoff(), BLOCK) is None


@pytest.mark.parametrize("sampling", [
    replace(GREEDY, seed=3), SamplingSpec(max_tokens=16, temperature=0.7), replace(GREEDY, repetition_penalty=1.2),
    replace(GREEDY, logit_bias=((5, 2.0),), stop_token_ids=(9,), top_k=5, min_tokens=4, ignore_eos=True),
])
def test_a_lead_with_sampling_that_only_reads_the_sequence(sampling: SamplingSpec) -> None:
    assert lead_chunk(sampling, handoff(), BLOCK) == TokenChunk((77,))


def test_no_lead_without_a_usable_handoff() -> None:
    assert lead_chunk(GREEDY, None, BLOCK) is None
    assert lead_chunk(GREEDY, handoff(first=-1), BLOCK) is None
    assert lead_chunk(GREEDY, replace(handoff(), prompt_tokens=0), BLOCK) is None
