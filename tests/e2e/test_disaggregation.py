"""Disaggregated serving on real vLLM CPU workers equals one vLLM instance, token for token, and
every disaggregated request moves its KV blocks over NIXL."""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from openai import OpenAI

from tests.e2e.promtext import sample
from tests.e2e.servers import Server

pytestmark = pytest.mark.e2e

PROMPT_LENGTHS = [50, 64, 97, 128, 150, 200, 256, 300, 383, 450, 512, 600, 700, 800, 900, 1000]


def _complete(url: str, prompt: list[int], max_tokens: int = 16, **extra: object) -> dict:
    body = {"model": "tiny-llama", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True, "return_token_ids": True, **extra}
    reply = httpx.post(f"{url}/v1/completions", json=body, timeout=300)
    assert reply.status_code == 200, reply.text
    return {"json": reply.json(), "headers": reply.headers}


def test_greedy_output_equals_single_instance(pd_server: Server, reference_server: Server) -> None:
    rng = random.Random(7)
    prompts = [[rng.randrange(200, 40000) for _ in range(n)] for n in PROMPT_LENGTHS]
    pulls_before = sample(pd_server.url, "pdserve_worker_load", worker="decode-0", figure="kv_pulls")
    blocks_before = sample(pd_server.url, "pdserve_worker_load", worker="decode-0", figure="kv_blocks_pulled")
    bytes_before = sample(pd_server.url, "pdserve_worker_load", worker="decode-0", figure="kv_bytes_pulled")
    led_before = sample(pd_server.url, "pdserve_first_tokens_total", source="prefill")
    with ThreadPoolExecutor(max_workers=4) as pool:
        ours = list(pool.map(lambda p: _complete(pd_server.url, p), prompts))
        theirs = list(pool.map(lambda p: _complete(reference_server.url, p), prompts))
    for prompt, mine, ref in zip(prompts, ours, theirs, strict=True):
        my_ids = mine["json"]["choices"][0]["token_ids"]
        ref_ids = ref["json"]["choices"][0]["token_ids"]
        assert len(my_ids) == 16
        assert my_ids == ref_ids, f"prompt of {len(prompt)} tokens diverged"
        assert mine["json"]["choices"][0]["text"] == ref["json"]["choices"][0]["text"]
        assert mine["headers"]["x-prefill-worker"].startswith("prefill-")
        assert mine["headers"]["x-decode-worker"] == "decode-0"
    # The decode worker's own figures: one NIXL pull per request, and every prompt block pulled.
    time.sleep(1.5)  # load figures are polled every 0.5 s
    pulls = sample(pd_server.url, "pdserve_worker_load", worker="decode-0", figure="kv_pulls") - pulls_before
    blocks = sample(pd_server.url, "pdserve_worker_load", worker="decode-0", figure="kv_blocks_pulled") - blocks_before
    assert pulls >= len(prompts)
    expected_blocks = sum(-(-n // 32) for n in PROMPT_LENGTHS)
    assert blocks >= expected_blocks
    # Bytes as NIXL reported them: every block of every prompt (512 B/token for this model).
    moved = sample(pd_server.url, "pdserve_worker_load", worker="decode-0", figure="kv_bytes_pulled") - bytes_before
    assert moved >= expected_blocks * 32 * 512
    assert sample(pd_server.url, "pdserve_kv_handoff_bytes_count") >= len(prompts)
    # The prefill's token opened every answer whose prompt leaves it strictly inside its last 32-token
    # block (orchestrator.lead_token); vLLM's decode continued those from the prompt and that token.
    led = sample(pd_server.url, "pdserve_first_tokens_total", source="prefill") - led_before
    assert led == sum(n % 32 not in (0, 31) for n in PROMPT_LENGTHS) == 10


def test_sampling_fields_reach_vllm_through_the_disaggregated_path(pd_server: Server, reference_server: Server) -> None:
    """Penalties, top_k, min_tokens and logit_bias go to vLLM's sampler on both workers: the answer
    changes, the banned tokens never appear, and it equals plain vLLM's with the same fields."""
    prompt = [random.Random(11).randrange(200, 40000) for _ in range(120)]
    plain = _complete(pd_server.url, prompt, 24)["json"]["choices"][0]["token_ids"]
    banned = sorted(set(plain[:4]))
    extra = {"presence_penalty": 0.8, "frequency_penalty": 0.6, "repetition_penalty": 1.3, "top_k": 20,
             "min_tokens": 12, "logit_bias": {str(t): -100 for t in banned}}
    mine = _complete(pd_server.url, prompt, 24, **extra)
    ref = _complete(reference_server.url, prompt, 24, **extra)
    my_ids = mine["json"]["choices"][0]["token_ids"]
    assert my_ids == ref["json"]["choices"][0]["token_ids"]
    assert mine["headers"]["x-prefill-worker"].startswith("prefill-")  # the disaggregated path
    assert my_ids != plain and not set(banned) & set(my_ids)


def test_logprobs_equal_plain_vllms_on_the_disaggregated_path(pd_server: Server, reference_server: Server) -> None:
    prompt = [random.Random(12).randrange(200, 40000) for _ in range(150)]
    mine = _complete(pd_server.url, prompt, 12, logprobs=3)
    ref = _complete(reference_server.url, prompt, 12, logprobs=3)
    assert mine["headers"]["x-prefill-worker"].startswith("prefill-")
    ours, theirs = mine["json"]["choices"][0]["logprobs"], ref["json"]["choices"][0]["logprobs"]
    assert ours["tokens"] == theirs["tokens"] and len(ours["tokens"]) == 12
    assert ours["token_logprobs"] == pytest.approx(theirs["token_logprobs"], abs=1e-3)
    for top, their_top in zip(ours["top_logprobs"], theirs["top_logprobs"], strict=True):
        assert len(top) == 3 and top.keys() <= their_top.keys()
        assert list(top.values()) == pytest.approx([their_top[t] for t in top], abs=1e-3)


def test_streamed_chat_logprobs_cover_every_token(pd_server: Server) -> None:
    client = OpenAI(base_url=f"{pd_server.url}/v1", api_key="unused", max_retries=0, timeout=120)
    stream = client.chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "Name three colours."}], max_tokens=10,
        temperature=0, logprobs=True, top_logprobs=2, stream=True, stream_options={"include_usage": True})
    entries, text, usage = [], "", None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            entries += choice.logprobs.content if choice.logprobs and choice.logprobs.content else []
    assert usage is not None and len(entries) == usage.completion_tokens > 0
    assert all(len(e.top_logprobs) == 2 and e.logprob <= 0 for e in entries)
    assert all(e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob for e in entries)


def test_json_schema_answers_equal_plain_vllms(pd_server: Server, reference_server: Server) -> None:
    """``response_format`` reaches vLLM's structured outputs on the decode worker: the answer is held to
    the schema (this random model would not write JSON otherwise) and equals plain vLLM's."""
    schema = {"type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
              "required": ["colour"], "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "Pick a colour."}], "max_tokens": 40,
            "temperature": 0, "response_format": fmt}
    answers = []
    for url in (pd_server.url, reference_server.url):
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300)
        assert reply.status_code == 200, reply.text
        answers.append(reply.json()["choices"][0])
    ours, theirs = answers
    assert ours["message"]["content"] == theirs["message"]["content"]
    assert ours["message"]["content"].lstrip().startswith("{")
    if ours["finish_reason"] == "stop":
        assert json.loads(ours["message"]["content"])["colour"] in {"red", "green", "blue"}
    free = httpx.post(f"{pd_server.url}/v1/chat/completions", timeout=300,
                      json={**body, "response_format": None}).json()["choices"][0]["message"]["content"]
    assert free != ours["message"]["content"]
