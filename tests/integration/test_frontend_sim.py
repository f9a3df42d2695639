"""The whole front end against simulated workers: 2 prefill + 2 decode sim engines in child processes
(LocalLauncher), real gRPC, the real Service and FastAPI app served by uvicorn on 127.0.0.1, driven by
the official openai client and httpx."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import openai
import pytest
from conftest import StartWorkers
from pd_harness import MODEL_NAME, FrontEnd, LoopThread, assert_error, metric_value, sim_config, sse_events

from orchestrator.api.text import Tokenizer

pytestmark = pytest.mark.timeout(60)

LONG_PROMPT = ("You are reading a long shared document about disaggregated serving. " * 8).strip()
PREFILL_IDS = {"prefill-0", "prefill-1"}
DECODE_IDS = {"decode-0", "decode-1"}


@pytest.fixture(scope="module")
def front(tiny_model_dir: Path, tokenizer: Tokenizer, harness_loop: LoopThread,
          start_workers: StartWorkers) -> Iterator[FrontEnd]:
    config = sim_config(tiny_model_dir, prefill=2, decode=2)
    _, endpoints = start_workers(config)
    assert sorted(e.worker_id for e in endpoints) == sorted(PREFILL_IDS | DECODE_IDS)
    front = FrontEnd.start(harness_loop, config, endpoints, tokenizer)
    yield front
    front.stop()


@pytest.fixture(scope="module")
def client(front: FrontEnd) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{front.url}/v1", api_key="unused", max_retries=0, timeout=30) as c:
        yield c


def check_route_headers(headers: Mapping[str, str]) -> None:
    assert headers["x-prefill-worker"] in PREFILL_IDS
    assert headers["x-decode-worker"] in DECODE_IDS
    assert headers["x-route-reason"]


def test_chat_completion(client: openai.OpenAI, tokenizer: Tokenizer) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=12, temperature=0)
    check_route_headers(raw.headers)
    reply = raw.parse()
    assert reply.object == "chat.completion" and reply.model == MODEL_NAME and reply.id.startswith("chatcmpl-")
    (choice,) = reply.choices
    assert choice.finish_reason == "length"
    assert choice.message.role == "assistant" and choice.message.content
    assert reply.usage is not None
    prompt = tokenizer.chat_prompt([{"role": "user", "content": "What is the capital of France?"}])
    assert reply.usage.prompt_tokens == len(prompt)
    assert reply.usage.completion_tokens == 12
    assert reply.usage.total_tokens == len(prompt) + 12


def test_greedy_is_deterministic_and_streaming_matches(client: openai.OpenAI) -> None:
    kwargs = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Count to five."}],
              "max_tokens": 10, "temperature": 0.0, "seed": 7}
    first = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    second = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    assert first.choices[0].message.content == second.choices[0].message.content
    chunks = list(client.chat.completions.create(**kwargs, stream=True,  # type: ignore[call-overload]
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == first.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[1].choices[0].delta.content  # the role goes out with the first text, not before it
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    usage = chunks[-1].usage
    assert not chunks[-1].choices and usage is not None and usage.completion_tokens == 10


def test_completion_with_stop_string(client: openai.OpenAI) -> None:
    full = client.completions.create(model=MODEL_NAME, prompt="Once upon a time", max_tokens=16, temperature=0)
    text = full.choices[0].text
    assert full.object == "text_completion" and full.choices[0].finish_reason == "length" and len(text) > 4
    stop = text[2:4]
    cut = client.completions.create(model=MODEL_NAME, prompt="Once upon a time", max_tokens=16, temperature=0,
                                    stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[: text.index(stop)]


def test_chat_streaming_with_stop_string(client: openai.OpenAI) -> None:
    kwargs = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Write a line."}], "max_tokens": 16,
              "temperature": 0}
    text = client.chat.completions.create(**kwargs).choices[0].message.content  # type: ignore[call-overload]
    assert text and len(text) > 6
    stop = text[3:6]
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stop=stop))  # type: ignore[call-overload]
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text[: text.index(stop)]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


def test_completion_streaming_with_headers(front: FrontEnd) -> None:
    body = {"model": MODEL_NAME, "prompt": "Tell me a story", "max_tokens": 8, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{front.url}/v1/completions", json=body, timeout=30) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        check_route_headers(reply.headers)
        events = list(sse_events(reply.iter_lines()))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "".join(c["choices"][0]["text"] for c in chunks)
    # No empty opening chunk: each one carries text or the finish (a client may stamp TTFT at the first).
    assert all(c["choices"][0]["text"] or c["choices"][0]["finish_reason"] for c in chunks)


def test_completion_from_token_ids(front: FrontEnd) -> None:
    reply = httpx.post(f"{front.url}/v1/completions", timeout=30, json={
        "model": MODEL_NAME, "prompt": [19556, 905, 28], "max_tokens": 5, "return_token_ids": True})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["usage"]["prompt_tokens"] == 3 and body["usage"]["completion_tokens"] == 5
    assert len(body["choices"][0]["token_ids"]) == 5


def test_repeated_long_prompt_reports_cached_tokens(client: openai.OpenAI, front: FrontEnd) -> None:
    messages = [{"role": "user", "content": LONG_PROMPT}]
    predicted_before = front.metric("pdserve_cached_tokens_total", source="predicted")
    observed_before = front.metric("pdserve_cached_tokens_total", source="observed")
    first = client.chat.completions.with_raw_response.create(model=MODEL_NAME, messages=messages,  # type: ignore[arg-type]
                                                             max_tokens=4, temperature=0)
    # The prefill worker's KV events reach the orchestrator's prefix index over gRPC.
    assert front.wait_until(lambda: front.metric("pdserve_prefix_index_blocks") > 0, 5)
    second = client.chat.completions.with_raw_response.create(model=MODEL_NAME, messages=messages,  # type: ignore[arg-type]
                                                              max_tokens=4, temperature=0)
    # The KV-aware router sends the repeat to the prefill worker that holds the prompt's blocks.
    assert second.headers["x-prefill-worker"] == first.headers["x-prefill-worker"]
    first_usage, usage = first.parse().usage, second.parse().usage
    assert first_usage is not None and usage is not None and usage.prompt_tokens > 100
    assert first_usage.prompt_tokens_details is not None
    first_cached = first_usage.prompt_tokens_details.cached_tokens or 0  # the shared chat-template prefix
    details = usage.prompt_tokens_details
    assert details is not None and details.cached_tokens is not None
    # Every full 4-token block before the last prompt token is a hit.
    assert details.cached_tokens == (usage.prompt_tokens - 1) // 4 * 4 > first_cached
    # The router predicted exactly the hits the engine then reported.
    predicted = front.metric("pdserve_cached_tokens_total", source="predicted") - predicted_before
    observed = front.metric("pdserve_cached_tokens_total", source="observed") - observed_before
    assert predicted == observed == first_cached + details.cached_tokens


def test_models_health_and_metrics(front: FrontEnd, client: openai.OpenAI) -> None:
    client.completions.create(model=MODEL_NAME, prompt="warm up", max_tokens=3)
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]
    health = httpx.get(f"{front.url}/health", timeout=10)
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok"
    assert {w["id"] for w in body["prefill"]} == PREFILL_IDS and {w["id"] for w in body["decode"]} == DECODE_IDS
    assert all(w["healthy"] for w in body["prefill"] + body["decode"])
    text = httpx.get(f"{front.url}/metrics", timeout=10).text
    for name in ("pdserve_ttft_seconds_count", "pdserve_e2e_seconds_count", "pdserve_tpot_seconds_count",
                 "pdserve_itl_seconds_count", "pdserve_prefill_seconds_count", "pdserve_kv_handoff_seconds_count"):
        assert metric_value(text, name) > 0, name
    assert metric_value(text, "pdserve_requests_total", endpoint="completions", status="200") > 0
    assert metric_value(text, "pdserve_tokens_total", kind="generated") > 0
    assert metric_value(text, "pdserve_kv_handoff_blocks_total") > 0
    assert metric_value(text, "pdserve_worker_healthy", worker="decode-1") == 1
    assert "pdserve_route_decisions_total" in text


@pytest.mark.parametrize(("path", "payload", "status", "param"), [
    ("/v1/chat/completions", {"model": MODEL_NAME, "messages": [], "max_tokens": 3}, 400, "messages"),
    ("/v1/chat/completions", {"model": MODEL_NAME, "messages": [{"role": "user", "content": "x"}],
                              "temperature": 9}, 400, "temperature"),
    ("/v1/completions", {"model": MODEL_NAME, "prompt": [1, -3]}, 400, "prompt"),
    ("/v1/completions", {"model": MODEL_NAME, "prompt": [1, 10_000_000], "max_tokens": 2}, 400, "prompt"),
    ("/v1/completions", {"model": MODEL_NAME, "prompt": "hi", "max_tokens": 2000}, 400, "max_tokens"),
    ("/v1/completions", {"model": "gpt-9", "prompt": "hi", "max_tokens": 2}, 404, "model"),
    ("/v1/completions", {"model": MODEL_NAME, "prompt": "hi", "max_tokens": 2, "seed": 2**63}, 400, "seed"),
])
def test_bad_requests_get_openai_errors(front: FrontEnd, path: str, payload: dict[str, object], status: int,
                                        param: str) -> None:
    error = assert_error(httpx.post(f"{front.url}{path}", json=payload, timeout=10), status)
    assert error["param"] == param or param in error["message"]


def test_openai_client_raises_typed_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.completions.create(model="gpt-9", prompt="hi", max_tokens=2)
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model=MODEL_NAME, prompt="hi", max_tokens=5000)
    assert bad.value.code == "context_length_exceeded"


def test_invalid_json_is_400(front: FrontEnd) -> None:
    reply = httpx.post(f"{front.url}/v1/chat/completions", content=b"{nope",
                       headers={"content-type": "application/json"}, timeout=10)
    assert "JSON" in assert_error(reply, 400)["message"]
