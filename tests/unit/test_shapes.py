"""OpenAI response shapes (chat and text completion, streamed and not) and error bodies."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from orchestrator.api.admission import sampling_spec
from orchestrator.api.errors import APIError, bad_request, not_found_model, unavailable, upstream_failed
from orchestrator.api.logprobs import LogprobTexts, logprobs_payload
from orchestrator.api.schemas import ChatCompletionRequest, ChatMessage, CompletionRequest
from orchestrator.api.shapes import ResponseShape, usage
from protocol.types import TokenLogprob


def test_usage_counts_and_cached_tokens() -> None:
    assert usage(10, 5, 8) == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                               "prompt_tokens_details": {"cached_tokens": 8}}


def test_ids_are_unique_and_prefixed() -> None:
    a, b = ResponseShape.chat("m"), ResponseShape.chat("m")
    assert a.request_id.startswith("chatcmpl-") and a.request_id != b.request_id
    assert ResponseShape.completion("m").request_id.startswith("cmpl-")
    assert (a.endpoint, ResponseShape.completion("m").endpoint) == ("chat_completions", "completions")


def test_chat_chunks() -> None:
    shape = ResponseShape("chat", "chatcmpl-1", "m", 7)
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "m"}
    assert shape.role_chunk() == {**head, "choices": [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    assert shape.chunk("hi", None) == {**head, "choices": [{"index": 0, "delta": {"content": "hi"},
                                                            "finish_reason": None}]}
    assert shape.chunk("", "stop")["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert shape.usage_chunk(3, 2, 0) == {**head, "choices": [], "usage": usage(3, 2, 0)}


def test_completion_chunks() -> None:
    shape = ResponseShape("completion", "cmpl-1", "m", 7)
    head = {"id": "cmpl-1", "object": "text_completion", "created": 7, "model": "m"}
    assert shape.role_chunk() is None  # a completion stream opens with its first text, as vLLM's does
    assert shape.chunk("x", "length") == {**head, "choices": [{"index": 0, "text": "x", "logprobs": None,
                                                               "finish_reason": "length"}]}
    assert shape.usage_chunk(1, 1, 1)["object"] == "text_completion"


@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_final(kind: str) -> None:
    shape = ResponseShape(kind, "id-1", "m", 7)  # type: ignore[arg-type]
    body = shape.final("text", "length", 10, 4, 8)
    assert body["id"] == "id-1" and body["model"] == "m" and body["created"] == 7
    assert body["usage"] == usage(10, 4, 8)
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "length" and choice["index"] == 0 and "token_ids" not in choice
    if kind == "chat":
        assert body["object"] == "chat.completion"
        assert choice["message"] == {"role": "assistant", "content": "text"}
    else:
        assert body["object"] == "text_completion" and choice["text"] == "text"
    assert shape.final("t", "stop", 1, 2, 0, [5, 6])["choices"][0]["token_ids"] == [5, 6]


@pytest.mark.parametrize(("error", "status", "type_", "code"), [
    (bad_request("bad", "max_tokens", "c"), 400, "invalid_request_error", "c"),
    (not_found_model("gpt-9"), 404, "invalid_request_error", "model_not_found"),
    (unavailable("down"), 503, "service_unavailable", "no_healthy_worker"),
    (upstream_failed("boom"), 502, "upstream_error", "worker_failed"),
    (upstream_failed("slow", timeout=True), 504, "upstream_error", "worker_timeout"),
])
def test_error_bodies(error, status: int, type_: str, code: str) -> None:  # type: ignore[no-untyped-def]
    assert error.status == status
    body = error.body()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert (body["error"]["type"], body["error"]["code"]) == (type_, code)
    assert body["error"]["message"]


def test_request_schemas() -> None:
    chat = ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        "max_tokens": 5, "max_completion_tokens": 3, "stop": "x"})
    assert chat.messages[0].text() == "ab" and chat.messages[0].char_count() == 2
    assert chat.requested_max_tokens() == 3
    assert chat.stop_list() == ["x"]
    completion = CompletionRequest.model_validate({"model": "m", "prompt": [1, 2], "stop": ["a", "b"]})
    assert completion.requested_max_tokens() is None and completion.stop_list() == ["a", "b"]
    assert ChatMessage.model_validate({"role": "assistant"}).text() == ""


@pytest.mark.parametrize("extra", [{"unknown_field": 1}, {"max_tokens": "5"}, {"max_tokens": True},
                                   {"logprobs": "true"}, {"top_logprobs": 2}, {"logprobs": True, "top_logprobs": 21},
                                   {"presence_penalty": "0.5"}, {"presence_penalty": 2.5}, {"logit_bias": {"a": 1}},
                                   {"logit_bias": {"1": 101}}, {"top_k": "3"}, {"min_tokens": -1},
                                   {"model": "\ud800"}, {"stop": ["a", 1]},
                                   {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}])
def test_request_schemas_refuse(extra: dict[str, object]) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "a"}], **extra}
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate(body)


def test_sampling_fields_reach_the_sampling_spec() -> None:
    body = CompletionRequest.model_validate({
        "model": "m", "prompt": [1, 2], "max_tokens": 10, "top_k": -1, "min_tokens": 3, "presence_penalty": 0.5,
        "frequency_penalty": -1, "repetition_penalty": 1.2, "logit_bias": {"77": -100, "5": 2.5},
        "stop_token_ids": [9, 2]})
    spec = sampling_spec(body, prompt_len=2, max_len=100, eos_token_id=2)
    assert (spec.top_k, spec.min_tokens, spec.presence_penalty, spec.frequency_penalty, spec.repetition_penalty) == (
        0, 3, 0.5, -1.0, 1.2)
    assert spec.logit_bias == ((5, 2.5), (77, -100.0)) and spec.stop_token_ids == (2, 9)
    assert spec.shaping().keys() == {"min_tokens", "presence_penalty", "frequency_penalty", "repetition_penalty",
                                     "logit_bias"}
    plain = sampling_spec(CompletionRequest.model_validate({"model": "m", "prompt": [1]}), 1, 100, 2)
    assert plain.shaping() == {} and plain.repetition_penalty == 1.0 and plain.top_k == 0


def test_min_tokens_must_fit_the_completion() -> None:
    body = CompletionRequest.model_validate({"model": "m", "prompt": [1, 2], "max_tokens": 4, "min_tokens": 5})
    with pytest.raises(APIError) as refused:
        sampling_spec(body, prompt_len=2, max_len=100, eos_token_id=2)
    assert refused.value.status == 400 and refused.value.param == "min_tokens"


def test_logprobs_are_asked_for_as_openai_says() -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "a"}]}
    assert ChatCompletionRequest.model_validate(base).requested_logprobs() is None
    def asked(**extra: object) -> int | None:
        return ChatCompletionRequest.model_validate({**base, **extra}).requested_logprobs()

    assert asked(logprobs=True) == 0 and asked(logprobs=True, top_logprobs=3) == 3
    assert asked(logprobs=False, top_logprobs=0) is None
    assert CompletionRequest.model_validate({"model": "m", "prompt": "a", "logprobs": 2}).requested_logprobs() == 2


class _Letters:
    """A tokenizer stand-in for token texts: token i is the letter chr(97 + i)."""

    def token_text(self, token_id: int) -> str:
        return chr(97 + token_id)


def test_logprob_payloads_in_both_formats() -> None:
    texts = LogprobTexts(_Letters())  # type: ignore[arg-type]
    texts.add((0, 1), (TokenLogprob(-0.5, ((0, -0.5), (2, -1.5))), TokenLogprob(-2.0, ((3, -0.1),))))
    first = texts.take()
    texts.add((2,), (TokenLogprob(-0.25),))
    second = texts.take()
    assert texts.take() == () and [e.offset for e in first + second] == [0, 1, 2]
    chat = logprobs_payload("chat", first)["content"]
    assert chat[0] == {"token": "a", "logprob": -0.5, "bytes": [97],
                       "top_logprobs": [{"token": "a", "logprob": -0.5, "bytes": [97]},
                                        {"token": "c", "logprob": -1.5, "bytes": [99]}]}
    assert chat[1]["top_logprobs"] == [{"token": "d", "logprob": -0.1, "bytes": [100]}]
    assert logprobs_payload("completion", first + second) == {
        "tokens": ["a", "b", "c"], "token_logprobs": [-0.5, -2.0, -0.25],
        "top_logprobs": [{"a": -0.5, "c": -1.5}, {"d": -0.1}, {}], "text_offset": [0, 1, 2]}
    shape = ResponseShape.completion("m")
    assert shape.chunk("ab", None, first)["choices"][0]["logprobs"]["tokens"] == ["a", "b"]
    assert shape.chunk("ab", None)["choices"][0]["logprobs"] is None
    assert "logprobs" not in ResponseShape.chat("m").chunk("ab", None)["choices"][0]
    assert ResponseShape.chat("m").final("c", "stop", 1, 1, 0, logprobs=second)["choices"][0]["logprobs"] == {
        "content": [{"token": "c", "logprob": -0.25, "bytes": [99], "top_logprobs": []}]}


def test_response_formats() -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "a"}]}

    def asked(fmt: object) -> tuple[bool, str | None]:
        return ChatCompletionRequest.model_validate({**base, "response_format": fmt}).requested_json()

    assert asked(None) == (False, None) and asked({"type": "text"}) == (False, None)
    assert asked({"type": "json_object"}) == (True, None)
    schema = {"type": "object", "properties": {"b": {"type": "integer"}, "a": {"type": "string"}}}
    assert asked({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}) == (
        False, '{"properties":{"a":{"type":"string"},"b":{"type":"integer"}},"type":"object"}')
    for bad in ({"type": "json"}, {"type": "json_schema"}, {"type": "json_schema", "json_schema": {"schema": {}}},
                {"type": "json_object", "extra": 1}):
        with pytest.raises(ValidationError):
            asked(bad)
