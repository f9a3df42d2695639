"""The official ``openai`` client against pdserve: chat and completions, streaming and not, usage
with cached tokens, response headers, models and health."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.servers import Server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(pd_server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{pd_server.url}/v1", api_key="unused", timeout=120, max_retries=0)


def test_models_and_health(client: openai.OpenAI, pd_server: Server) -> None:
    assert [m.id for m in client.models.list().data] == ["tiny-llama"]
    health = httpx.get(f"{pd_server.url}/health", timeout=5).json()
    assert health["status"] == "ok"
    assert len(health["prefill"]) == 2 and len(health["decode"]) == 1


def test_chat_streaming_equals_non_streaming(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Count to five."}]
    raw = client.chat.completions.with_raw_response.create(model="tiny-llama", messages=messages, max_tokens=12,
                                                           temperature=0, seed=1)
    whole = raw.parse()
    assert raw.headers["x-prefill-worker"].startswith("prefill-")
    assert raw.headers["x-decode-worker"] == "decode-0"
    assert raw.headers["x-route-reason"]
    assert whole.usage is not None and whole.usage.completion_tokens == 12
    assert whole.choices[0].finish_reason == "length"
    stream = client.chat.completions.create(model="tiny-llama", messages=messages, max_tokens=12, temperature=0,
                                            seed=1, stream=True, stream_options={"include_usage": True})
    pieces, usage = [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
    assert "".join(pieces) == whole.choices[0].message.content
    assert usage is not None and usage.completion_tokens == 12
    assert usage.prompt_tokens == whole.usage.prompt_tokens
    assert usage.prompt_tokens_details is not None


def test_completions_with_stop_string(client: openai.OpenAI) -> None:
    free = client.completions.create(model="tiny-llama", prompt="The weather today is", max_tokens=10, temperature=0)
    text = free.choices[0].text
    assert free.usage is not None and free.usage.completion_tokens == 10
    # Stop at a piece of the text we know will appear: the output must end right before it.
    stop = text[len(text) // 2:][:3]
    if stop.strip():
        cut = client.completions.create(model="tiny-llama", prompt="The weather today is", max_tokens=10,
                                        temperature=0, stop=[stop])
        assert cut.choices[0].text == text[: text.index(stop)]
        assert cut.choices[0].finish_reason == "stop"


def test_repeated_long_prompt_reports_cached_tokens(client: openai.OpenAI) -> None:
    long_text = " ".join(f"fact number {i} is that the sky is blue" for i in range(60))
    messages = [{"role": "user", "content": long_text}]
    first = client.chat.completions.with_raw_response.create(model="tiny-llama", messages=messages, max_tokens=4,
                                                             temperature=0)
    second = client.chat.completions.with_raw_response.create(model="tiny-llama", messages=messages, max_tokens=4,
                                                              temperature=0)
    usage = second.parse().usage
    assert usage is not None and usage.prompt_tokens > 400
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens > 0
    # The repeat lands on the prefill worker that holds the prefix.
    assert second.headers["x-prefill-worker"] == first.headers["x-prefill-worker"]
