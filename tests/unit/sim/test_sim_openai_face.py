"""The sim engine's HTTP face (``worker.engines.sim.openai_face``) driven in process (httpx over ASGI) on
started sim engines of the ``tiny-fast`` profile at speedup 20: vLLM's OpenAI shapes, streaming with
usage, cached tokens from the prefix cache, refusals, ``/metrics`` under vLLM's names, and P/D with
vLLM's ``kv_transfer_params`` between two engines."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from protocol.engine_args import SimArgs
from protocol.types import SamplingSpec
from worker.engine import EngineRequest, EngineSpec, build_engine
from worker.engines.sim import SimEngine
from worker.engines.sim.openai_face import SimOpenAIFace
from worker.engines.sim.text import Tokenizer

ARGS = {"profile": "tiny-fast", "vocab_size": 49152, "eos_token_id": 2, "num_blocks": 1024,
        "max_model_len": 1024, "speedup": 20.0}
PROMPT = list(range(100, 141))  # 41 tokens: 10 full blocks of 4 and one token over
NIXL_KEYS = {"do_remote_prefill", "do_remote_decode", "remote_block_ids", "remote_engine_id", "remote_request_id",
             "remote_host", "remote_port", "tp_size", "dcp_size", "pp_size", "remote_num_tokens",
             "remote_blocks_expiry_time", "transfer_mode"}  # vLLM 0.32 NixlConnector request_finished
PREFILL_PARAMS = {"do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
                  "remote_block_ids": None, "remote_host": None, "remote_port": None}  # what routers send
Face = tuple[SimEngine, httpx.AsyncClient]
Make = Callable[..., Awaitable[Face]]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer(str(tiny_model_dir))


@pytest.fixture
async def make(tokenizer: Tokenizer) -> AsyncIterator[Make]:
    opened: list[tuple[SimEngine, httpx.AsyncClient]] = []

    async def factory(worker_id: str, *, text: bool = True, **args: object) -> Face:
        spec = EngineSpec(model="", worker_id=worker_id, role="both", args=SimArgs.model_validate({**ARGS, **args}))
        engine = build_engine(spec)
        assert isinstance(engine, SimEngine)
        await engine.start()
        face = SimOpenAIFace(engine, tokenizer=tokenizer if text else None)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=face.app), base_url="http://sim")
        opened.append((engine, client))
        return engine, client

    yield factory
    for engine, client in opened:
        await client.aclose()
        await engine.shutdown()


async def engine_tokens(engine: SimEngine, prompt: list[int], max_tokens: int) -> list[int]:
    out: list[int] = []
    async for delta in engine.generate(EngineRequest("direct", tuple(prompt), SamplingSpec(max_tokens, 0.0))):
        out.extend(delta.token_ids)
    return out


def events(body: str) -> list[Any]:
    """The SSE events of a streamed body; ``[DONE]`` must be the last."""
    data = [line[len("data: "):] for line in body.split("\n\n") if line]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


async def test_completion_tokens_usage_and_cached_tokens(make: Make, tokenizer: Tokenizer) -> None:
    engine, client = await make("c1")
    body = {"model": "sim-tiny", "prompt": PROMPT, "max_tokens": 8, "temperature": 0, "return_token_ids": True}
    first = (await client.post("/v1/completions", json=body)).json()
    choice = first["choices"][0]
    assert first["object"] == "text_completion" and first["id"].startswith("cmpl-") and first["model"] == "sim-tiny"
    assert choice["token_ids"] == await engine_tokens(engine, PROMPT, 8) and choice["finish_reason"] == "length"
    assert choice["text"] == tokenizer.decode(choice["token_ids"]) != ""
    assert choice["prompt_token_ids"] == PROMPT and first["kv_transfer_params"] is None
    assert first["usage"] == {"prompt_tokens": 41, "completion_tokens": 8, "total_tokens": 49,
                              "prompt_tokens_details": {"cached_tokens": 0}}
    again = (await client.post("/v1/completions", json=body)).json()
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == 40  # 10 full blocks; never the last token
    assert again["choices"][0]["token_ids"] == choice["token_ids"]
    stop = (await client.post("/v1/completions", json={**body, "stop_token_ids": [choice["token_ids"][2]]})).json()
    assert stop["choices"][0]["token_ids"] == choice["token_ids"][:3] and stop["choices"][0]["finish_reason"] == "stop"


async def test_text_prompt_chat_template_and_streaming(make: Make, tokenizer: Tokenizer) -> None:
    _, client = await make("c2")
    text = (await client.post("/v1/completions", json={"prompt": "The capital of France is", "max_tokens": 4,
                                                       "temperature": 0})).json()
    assert text["usage"]["prompt_tokens"] == len(tokenizer.encode("The capital of France is", add_special_tokens=True))
    messages = [{"role": "user", "content": "hello there"}]
    chat_body = {"messages": messages, "max_tokens": 6, "temperature": 0, "return_token_ids": True}
    chat = (await client.post("/v1/chat/completions", json=chat_body)).json()
    assert chat["object"] == "chat.completion" and chat["id"].startswith("chatcmpl-")
    assert chat["prompt_token_ids"] == tokenizer.chat_prompt(messages, add_generation_prompt=True)
    message = chat["choices"][0]["message"]
    assert message["role"] == "assistant" and message["content"] == tokenizer.decode(chat["choices"][0]["token_ids"])
    streamed = await client.post("/v1/chat/completions", json={
        **chat_body, "return_token_ids": False, "stream": True, "stream_options": {"include_usage": True}})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    chunks = events(streamed.text)
    assert chunks[0]["object"] == "chat.completion.chunk" and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == message["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length" and all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6
    assert chunks[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] > 0  # the chat's prompt was cached
    both = (await client.post("/v1/chat/completions", json={**chat_body, "max_completion_tokens": 2})).json()
    assert both["usage"]["completion_tokens"] == 2  # max_completion_tokens wins over max_tokens, as in vLLM


async def test_stream_of_token_ids_without_a_tokenizer(make: Make) -> None:
    engine, client = await make("c3", text=False)
    resp = await client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 5, "temperature": 0,
                                                      "stream": True, "return_token_ids": True,
                                                      "stream_options": {"continuous_usage_stats": True}})
    chunks = events(resp.text)
    assert [t for c in chunks for t in c["choices"][0]["token_ids"]] == await engine_tokens(engine, PROMPT, 5)
    assert chunks[0]["choices"][0]["prompt_token_ids"] == PROMPT and all(c["choices"][0]["text"] == "" for c in chunks)
    assert [c["usage"]["completion_tokens"] for c in chunks] == list(range(1, 6))
    refused = await client.post("/v1/completions", json={"prompt": "text needs a tokenizer"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "prompt"


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"prompt": PROMPT, "logit_bias": {"1": 5}}, 400, "logit_bias"),  # vLLM knows it, the sim does not do it
    ({"prompt": PROMPT, "logprobs": 1}, 400, "logprobs"),
    ({"prompt": PROMPT, "logprobs": 0}, 400, "logprobs"),
    ({"prompt": PROMPT, "skip_special_tokens": False}, 400, "skip_special_tokens"),
    ({"prompt": PROMPT, "stop": ["\n"]}, 400, "stop"),
    ({"prompt": PROMPT, "n": 2}, 400, "n"),
    ({"prompt": PROMPT, "temperature": "0.5"}, 400, "temperature"),
    ({"prompt": PROMPT, "max_tokens": True}, 400, "max_tokens"),
    ({"prompt": PROMPT, "stream_options": {"include_usage": True}}, 400, None),
    ({"prompt": PROMPT, "max_tokens": 1000}, 400, "max_tokens"),
    ({"prompt": PROMPT, "model": "other"}, 404, "model"),
    ({"prompt": [10**6]}, 400, None),  # out of the vocabulary: the engine refuses it
    ({"prompt": PROMPT, "kv_transfer_params": {"do_remote_prefill": True}}, 400, "kv_transfer_params"),
    ({"prompt": PROMPT, "kv_transfer_params": {"do_remote_decode": True, "extra": 1}}, 400,
     "kv_transfer_params.extra"),
    ({"prompt": PROMPT, "stream": True, "kv_transfer_params": PREFILL_PARAMS}, 400, None),
])
async def test_unimplemented_or_bad_fields_are_refused_in_vllms_error_shape(
        make: Make, body: dict[str, Any], status: int, param: str | None) -> None:
    _, client = await make("bad")
    resp = await client.post("/v1/completions", json=body)
    error = resp.json()["error"]
    assert resp.status_code == status and error["code"] == status and error["message"]
    assert error["type"] == ("NotFoundError" if status == 404 else "BadRequestError")
    if param is not None:
        assert error["param"] == param


async def test_fields_vllm_does_not_know_are_dropped_as_vllm_drops_them(make: Make) -> None:
    """vLLM 0.32 ignores fields outside its request models (``best_of`` is gone from it; routers add their
    own, e.g. sglang-router's ``no_stop_trim``); no-op values of fields it knows are accepted."""
    _, client = await make("lenient")
    plain = await client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 4, "temperature": 0.0})
    extra = await client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 4, "temperature": 0.0,
                                                       "best_of": 3,
                                                       "no_stop_trim": True, "logprobs": None,
                                                       "skip_special_tokens": True})
    assert plain.status_code == extra.status_code == 200
    assert extra.json()["choices"][0]["text"] == plain.json()["choices"][0]["text"]
    chat = await client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "logprobs": False,
        "skip_special_tokens": True, "continue_final_message": False, "include_reasoning": True,
        "separate_reasoning": True, "stream_reasoning": True, "return_hidden_states": False})
    assert chat.status_code == 200 and chat.json()["usage"]["completion_tokens"] == 2
    refused = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}],
                                                              "continue_final_message": True})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "continue_final_message"


def test_the_field_lists_are_vllms() -> None:
    """The face's copies of vLLM's request field names equal the installed vLLM's."""
    chat = pytest.importorskip("vllm.entrypoints.openai.chat_completion.protocol")
    completion = pytest.importorskip("vllm.entrypoints.openai.completion.protocol")
    from worker.engines.sim.openai_models import VLLM_CHAT_FIELDS, VLLM_COMPLETION_FIELDS

    assert set(chat.ChatCompletionRequest.model_fields) == VLLM_CHAT_FIELDS
    assert set(completion.CompletionRequest.model_fields) == VLLM_COMPLETION_FIELDS


async def test_bad_json_and_chat_fields_are_400(make: Make) -> None:
    _, client = await make("bad2")
    resp = await client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 400
    chat = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}],
                                                           "tools": []})
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "tools"


async def test_models_health_and_vllm_metrics(make: Make) -> None:
    engine, client = await make("m1")
    models = (await client.get("/v1/models")).json()
    assert models["data"][0]["id"] == "sim-tiny" and models["data"][0]["max_model_len"] == 1024
    assert (await client.get("/health")).status_code == 200
    for _ in range(2):
        await client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 3, "temperature": 0})
    text = (await client.get("/metrics")).text
    labels = '{engine="0",model_name="sim-tiny"}'
    for line in ("vllm:num_requests_running", "vllm:num_requests_waiting"):
        assert f"{line}{labels} 0.0" in text
    assert f"vllm:kv_cache_usage_perc{labels} 0.0" in text  # cached but free blocks are not in use
    assert f"vllm:prefix_cache_queries_total{labels} 82.0" in text
    assert f"vllm:prefix_cache_hits_total{labels} 40.0" in text
    assert f"vllm:generation_tokens_total{labels} 6.0" in text
    assert 'vllm:request_success_total{engine="0",finished_reason="length",model_name="sim-tiny"} 2.0' in text
    await client.post("/v1/completions", json={"prompt": PROMPT, "kv_transfer_params": PREFILL_PARAMS})
    held = (await client.get("/metrics")).text  # a prefill's blocks held for its decode are in use
    assert f"vllm:kv_cache_usage_perc{labels} {11 / 1024!r}" in held
    await engine.shutdown()
    assert (await client.get("/health")).status_code == 503


async def test_prefill_and_decode_over_http_with_vllm_kv_transfer_params(make: Make) -> None:
    prefill, p_client = await make("pd-prefill")
    decode, d_client = await make("pd-decode")
    _, c_client = await make("pd-colocated")
    body = {"prompt": PROMPT, "max_tokens": 8, "temperature": 0, "return_token_ids": True}
    expected = (await c_client.post("/v1/completions", json=body)).json()["choices"][0]["token_ids"]

    first = (await p_client.post("/v1/completions", json={**body, "max_tokens": 1,
                                                          "kv_transfer_params": PREFILL_PARAMS})).json()
    params = first["kv_transfer_params"]
    assert set(params) == NIXL_KEYS and first["choices"][0]["token_ids"] == expected[:1]
    assert (params["do_remote_prefill"], params["do_remote_decode"], params["remote_engine_id"]) == (
        True, False, "pd-prefill")
    assert (params["remote_host"], params["tp_size"], params["remote_num_tokens"], params["transfer_mode"]) == (
        "127.0.0.1", 1, 41, "pull")
    assert isinstance(params["remote_port"], int) and params["remote_port"] > 0
    held = prefill.core.held_blocks(params["remote_request_id"])
    assert held is not None and params["remote_block_ids"] == [list(held)] and len(held) == 11

    second = (await d_client.post("/v1/completions", json={**body, "kv_transfer_params": params})).json()
    assert second["choices"][0]["token_ids"] == expected  # the same tokens as colocated, first one included
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == 40  # pulled: all but the last token
    load = decode.load()
    assert (load.kv_pulls, load.kv_blocks_pulled, load.kv_bytes_pulled) == (1, 11, 11 * 4 * 1024)
    assert prefill.core.held_blocks(params["remote_request_id"]) is None  # freed once read, as NIXL notifies

    again = await d_client.post("/v1/completions", json={**body, "kv_transfer_params": params})
    assert again.status_code == 500 and "source_gone" in again.json()["error"]["message"]
    wrong = await d_client.post("/v1/completions", json={**body, "prompt": PROMPT[:-5], "kv_transfer_params": params})
    assert wrong.status_code == 400  # the handoff is for another prompt


def test_detokenizer_emits_each_character_once_and_whole(tokenizer: Tokenizer) -> None:
    from worker.engines.sim.text import Detokenizer

    text = "Grüße, 世界! 🙂 done"
    ids = tokenizer.encode(text, add_special_tokens=False)
    detok = Detokenizer(tokenizer)
    pieces = [detok.push((i,)) for i in ids]
    assert "".join(pieces) == tokenizer.decode(ids) and all("\ufffd" not in p for p in pieces)
    assert Detokenizer(None).push(tuple(ids)) == ""
