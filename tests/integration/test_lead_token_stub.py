"""The prefill's first token opens the answer (``orchestrator.lead_token``), over stub gRPC workers.

Prompts are token ids so their length, against the stubs' 4-token KV blocks, decides whether the lead
applies. The stub decode worker answers a call that continues after the lead from the second token on.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from pd_harness import MODEL_NAME, StubFront, StubWorker, assert_error_body, sse_events

pytestmark = pytest.mark.timeout(60)


def completion(prompt_len: int, max_tokens: int = 5, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL_NAME, "prompt": list(range(100, 100 + prompt_len)), "max_tokens": max_tokens,
            "temperature": 0, **extra}


def test_the_answer_is_the_same_tokens_with_and_without_a_lead(stub_front: StubFront) -> None:
    front, _, (decode,) = stub_front([StubWorker("prefill-0", "prefill")], [StubWorker("decode-0", "decode")])
    texts = []
    for prompt_len in (5, 6, 7, 8):  # the lead applies to 5 and 6: 7 would fill a block, 8 start one
        reply = httpx.post(f"{front.url}/v1/completions", json=completion(prompt_len), timeout=30)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["usage"]["completion_tokens"] == 5 and body["choices"][0]["finish_reason"] == "length"
        texts.append(body["choices"][0]["text"])
    assert texts == [texts[0]] * 4 and texts[0].startswith("Hello world")
    assert decode.continued == [True, True, False, False]
    assert front.metric("pdserve_first_tokens_total", source="prefill") == 2
    assert front.metric("pdserve_first_tokens_total", source="decode") == 2


def test_the_first_token_reaches_the_client_while_the_decode_is_still_silent(stub_front: StubFront) -> None:
    front, _, (decode,) = stub_front([StubWorker("prefill-0", "prefill")],
                                     [StubWorker("decode-0", "decode", generate="stall")], first_token_timeout_s=2.0)
    started = time.monotonic()
    arrivals: list[tuple[float, Any]] = []
    with httpx.stream("POST", f"{front.url}/v1/completions", timeout=30,
                      json=completion(6, stream=True)) as reply:
        assert reply.status_code == 200
        for event in sse_events(reply.iter_lines()):
            arrivals.append((time.monotonic() - started, event))
    texts = [(at, e["choices"][0]["text"]) for at, e in arrivals if isinstance(e, dict) and e.get("choices")]
    first_at, first = next((at, text) for at, text in texts if text)
    assert first == "Hello" and first_at < 1.5, arrivals  # well before the decode's first-token timeout
    error = assert_error_body(arrivals[-2][1], "worker_timeout")
    assert "no output" in error["message"] and arrivals[-2][0] >= 2.0
    (call,) = [c for c in decode.calls if c.endswith("-d")]
    assert decode.continued[0] and front.wait_until(lambda: call in decode.aborts, 5)


def test_a_one_token_answer_needs_no_decode_and_frees_the_handoff(stub_front: StubFront) -> None:
    front, _, (decode,) = stub_front([StubWorker("prefill-0", "prefill")], [StubWorker("decode-0", "decode")])
    reply = httpx.post(f"{front.url}/v1/completions", json=completion(6, max_tokens=1), timeout=30)
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert (choice["text"], choice["finish_reason"]) == ("Hello", "length")
    assert not any(c.endswith("-d") for c in decode.calls)
    # The stub's engine kind is unknown to the releaser, so it reads the unread handoff once to free it.
    assert front.wait_until(lambda: any(c.endswith("-release") for c in decode.calls), 5), decode.calls
    assert front.metric("pdserve_ttft_seconds_count") == 1


def test_first_token_decode_lets_the_decode_worker_sample_it(stub_front: StubFront) -> None:
    front, _, (decode,) = stub_front([StubWorker("prefill-0", "prefill")], [StubWorker("decode-0", "decode")],
                                     first_token="decode")
    reply = httpx.post(f"{front.url}/v1/completions", json=completion(6), timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["text"].startswith("Hello world") and decode.continued == [False]
    assert front.metric("pdserve_first_tokens_total", source="decode") == 1
    assert front.metric("pdserve_first_tokens_total", source="prefill") == 0
