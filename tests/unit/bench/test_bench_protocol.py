"""SSE parsing (bench.sse), request bodies and chunk text (bench.api), URL and target parsing."""

from __future__ import annotations

import pytest

from bench import sse
from bench.api import SamplingOptions, api_kind
from bench.client import normalize_url
from bench.config import parse_target
from bench.spec import Message, RequestSpec


def test_parse_line() -> None:
    assert sse.parse_line('data: {"a": 1}') == {"a": 1}
    assert sse.parse_line('data:{"a": 1}') == {"a": 1}
    assert sse.parse_line("data: [DONE]") is sse.DONE
    for ignored in ("", ": keep-alive", "event: message", "id: 3", "data: "):
        assert sse.parse_line(ignored) is None
    with pytest.raises(ValueError):
        sse.parse_line("data: {broken")
    with pytest.raises(ValueError):
        sse.parse_line("data: [1, 2]")


def test_usage_and_errors() -> None:
    chunk = {"usage": {"prompt_tokens": 10, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 8}}}
    assert sse.usage_of(chunk) == sse.Usage(10, 4, 8)
    assert sse.usage_of({"usage": {"prompt_tokens": 10, "completion_tokens": 4, "prompt_tokens_details": None}}) == (
        sse.Usage(10, 4, None)
    )
    assert sse.usage_of({"usage": None}) is None and sse.usage_of({}) is None
    assert sse.error_of({"error": {"message": "overloaded"}}) == "overloaded"
    assert sse.error_of({"choices": []}) is None


def test_chat_body_streams_with_usage_and_reads_delta_text() -> None:
    api = api_kind("chat")
    spec = RequestSpec("r", 8, messages=(Message("user", "hi"),))
    body = api.body(spec, "m", SamplingOptions(ignore_eos=True, extra_body=(("top_p", 0.5),)))
    assert api.path == "/v1/chat/completions"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": "hi"}] and body["max_tokens"] == 8
    assert body["ignore_eos"] is True and body["top_p"] == 0.5 and body["model"] == "m"
    assert api.text_of({"choices": [{"delta": {"role": "assistant"}}]}) == ""
    assert api.text_of({"choices": [{"delta": {"content": "ab"}}]}) == "ab"
    assert api.text_of({"choices": [{"delta": {"reasoning_content": "hmm"}}]}) == "hmm"
    assert api.text_of({"choices": [], "usage": {}}) == ""


def test_completions_body_uses_prompt() -> None:
    api = api_kind("completions")
    body = api.body(RequestSpec("r", 2, prompt="once"), "m", SamplingOptions())
    assert api.path == "/v1/completions" and body["prompt"] == "once" and "ignore_eos" not in body
    assert api.text_of({"choices": [{"text": "x"}]}) == "x"
    with pytest.raises(ValueError):
        api_kind("embeddings")


def test_urls_and_targets() -> None:
    for url in (
        "http://127.0.0.1:8000",
        "http://127.0.0.1:8000/",
        "http://127.0.0.1:8000/v1",
        "http://127.0.0.1:8000/v1/",
    ):
        assert normalize_url(url) == "http://127.0.0.1:8000"
    with pytest.raises(ValueError):
        normalize_url("127.0.0.1:8000")
    assert parse_target("pd=http://127.0.0.1:1/v1", 0).name == "pd"
    bare = parse_target("http://127.0.0.1:9/v1", 0)
    assert (bare.name, bare.url) == ("127.0.0.1:9", "http://127.0.0.1:9")
