"""Failure paths of the real front end: every error is an OpenAI-style body with the right status, a
stalled worker gives a 5xx within its timeout (never a hang), a failure mid-stream ends the SSE stream
with an error event, a client that goes away gets its request aborted on the workers, and a pool with
no healthy worker answers 503.

Most tests use stub gRPC workers (``pd_harness.StubWorker``) whose Prefill/Generate stall or fail on
demand; the dead-pool test kills a real simulated worker's process group."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import StartWorkers
from pd_harness import (
    MODEL_NAME,
    FrontEnd,
    LoopThread,
    StubFront,
    StubWorker,
    assert_error,
    assert_error_body,
    sim_config,
    sse_events,
)

from orchestrator.api.text import Tokenizer

pytestmark = pytest.mark.timeout(60)

SLACK_S = 3.0  # scheduling slack on a busy 2-core host (other suites may be running)


def chat(max_tokens: int = 8, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": max_tokens,
            **extra}


def timed_post(url: str, body: dict[str, Any], timeout: float = 30) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    reply = httpx.post(url, json=body, timeout=timeout)
    return reply, time.monotonic() - started


def test_stalled_prefill_is_504_within_the_prefill_timeout(stub_front: StubFront) -> None:
    front, (prefill,), (decode,) = stub_front([StubWorker("prefill-0", "prefill", prefill="stall")],
                                              [StubWorker("decode-0", "decode")], prefill_timeout_s=1.0)
    reply, took = timed_post(f"{front.url}/v1/chat/completions", chat())
    error = assert_error(reply, 504, "worker_timeout")
    assert error["type"] == "upstream_error"
    assert "prefill" in error["message"].lower() and "timed out" in error["message"]
    assert 1.0 <= took < 1.0 + SLACK_S
    (request_id,) = prefill.calls
    assert front.wait_until(lambda: request_id in prefill.cancelled, 5)  # the deadline cancelled the RPC
    assert not decode.calls  # nothing reached the decode worker
    assert front.metric("pdserve_requests_total", endpoint="chat_completions", status="502") == 1


def test_failed_prefill_is_retried_on_another_worker(stub_front: StubFront) -> None:
    front, prefill, _ = stub_front([StubWorker("prefill-0", "prefill", prefill="fail"),
                                    StubWorker("prefill-1", "prefill", prefill="fail")],
                                   [StubWorker("decode-0", "decode")])
    prefill[1].prefill = "ok"
    replies = [httpx.post(f"{front.url}/v1/chat/completions", json=chat(), timeout=30) for _ in range(3)]
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    assert {r.headers["x-prefill-worker"] for r in replies} == {"prefill-1"}
    assert len(prefill[1].calls) == 3


def test_every_prefill_worker_failing_is_502(stub_front: StubFront) -> None:
    front, prefill, _ = stub_front([StubWorker("prefill-0", "prefill", prefill="fail"),
                                    StubWorker("prefill-1", "prefill", prefill="fail")],
                                   [StubWorker("decode-0", "decode")])
    error = assert_error(httpx.post(f"{front.url}/v1/completions", timeout=30,
                                    json={"model": MODEL_NAME, "prompt": "hi", "max_tokens": 2}), 502, "worker_failed")
    assert "UNAVAILABLE" in error["message"]
    assert len(prefill[0].calls) + len(prefill[1].calls) == 2  # one try on each, no more


def test_dead_prefill_pool_falls_back_to_local_prefill(stub_front: StubFront, harness_loop: LoopThread) -> None:
    front, _, (decode,) = stub_front([StubWorker("prefill-0", "prefill")], [StubWorker("decode-0", "decode")])
    assert httpx.post(f"{front.url}/v1/chat/completions", json=chat(), timeout=30).headers["x-prefill-worker"] \
        == "prefill-0"
    harness_loop.run(stub_front.servers["prefill-0"].stop())
    assert front.wait_until(lambda: not front.service.prefill.get("prefill-0").healthy, 10)  # type: ignore[union-attr]
    reply = httpx.post(f"{front.url}/v1/chat/completions", json=chat(), timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-prefill-worker"] == "none" and reply.headers["x-route-reason"] == "prefill_saturated"
    assert reply.json()["choices"][0]["message"]["content"]
    assert decode.with_handoff == [True, False]  # the decode worker prefilled the second prompt itself
    health = httpx.get(f"{front.url}/health", timeout=5)  # served, but not as configured
    assert health.status_code == 200 and health.json()["status"] == "degraded"
    assert health.json()["prefill"] == [{"id": "prefill-0", "healthy": False, "draining": False}]


def test_a_decode_worker_that_comes_back_serves_again(stub_front: StubFront, harness_loop: LoopThread) -> None:
    front, _, (decode,) = stub_front([StubWorker("prefill-0", "prefill")], [StubWorker("decode-0", "decode")])
    handle = front.service.decode.get("decode-0")
    server = stub_front.servers["decode-0"]
    harness_loop.run(server.stop())
    assert front.wait_until(lambda: not handle.healthy, 10)
    refused = httpx.post(f"{front.url}/v1/chat/completions", json=chat(), timeout=10)
    assert_error(refused, 503, "no_healthy_worker")
    assert int(refused.headers["retry-after"]) >= 1  # clients back off instead of hammering
    harness_loop.run(server.restart())
    assert front.wait_until(lambda: handle.healthy, 15)
    reply = httpx.post(f"{front.url}/v1/chat/completions", json=chat(), timeout=10)
    assert reply.status_code == 200 and reply.headers["x-decode-worker"] == "decode-0"
    assert len(decode.calls) == 1


def test_stalled_decode_is_504_within_the_first_token_timeout(stub_front: StubFront) -> None:
    front, _, (decode,) = stub_front([StubWorker("prefill-0", "prefill")],
                                     [StubWorker("decode-0", "decode", generate="stall")], first_token_timeout_s=1.0)
    reply, took = timed_post(f"{front.url}/v1/chat/completions", chat())
    error = assert_error(reply, 504, "worker_timeout")
    assert "decode" in error["message"].lower()
    assert 1.0 <= took < 1.0 + SLACK_S
    request_id = decode.calls[0]
    assert request_id.endswith("-d")  # the decode itself; a read that frees its handoff may follow
    assert front.wait_until(lambda: request_id in decode.aborts, 5)  # released on the worker
    # The stub's engine kind is unknown to the releaser, so the unread handoff is also read once, to be freed.
    assert front.wait_until(lambda: any(c.endswith("-release") for c in decode.calls), 5), decode.calls


def test_stalled_decode_stream_ends_with_an_error_event(stub_front: StubFront) -> None:
    front, _, _ = stub_front([StubWorker("prefill-0", "prefill")],
                             [StubWorker("decode-0", "decode", generate="stall")], first_token_timeout_s=1.0)
    started = time.monotonic()
    with httpx.stream("POST", f"{front.url}/v1/chat/completions", timeout=30,
                      json=chat(stream=True, stream_options={"include_usage": True})) as reply:
        assert reply.status_code == 200
        events = list(sse_events(reply.iter_lines()))
    assert time.monotonic() - started < 1.0 + SLACK_S
    # No text came, so the stream holds only the error: the role chunk goes out with the first text.
    assert len(events) == 2 and events[-1] == "[DONE]", events
    error = assert_error_body(events[0], "worker_timeout")
    assert "no output" in error["message"]


def test_request_timeout_without_streaming_is_504(stub_front: StubFront) -> None:
    front, _, (decode,) = stub_front([StubWorker("prefill-0", "prefill")],
                                     [StubWorker("decode-0", "decode", generate="drip", drip_s=0.05)],
                                     request_timeout_s=1.0)
    reply, took = timed_post(f"{front.url}/v1/completions",
                             {"model": MODEL_NAME, "prompt": "hi", "max_tokens": 500})
    assert_error(reply, 504, "worker_timeout")
    assert took < 1.0 + SLACK_S
    (request_id,) = decode.calls
    assert front.wait_until(lambda: request_id in decode.aborts, 5)


def test_worker_failing_mid_stream_ends_the_stream_with_an_error_event(stub_front: StubFront) -> None:
    front, _, _ = stub_front([StubWorker("prefill-0", "prefill")],
                             [StubWorker("decode-0", "decode", generate="fail", fail_after=3)])
    with httpx.stream("POST", f"{front.url}/v1/chat/completions", timeout=30,
                      json=chat(max_tokens=50, stream=True, stream_options={"include_usage": True})) as reply:
        assert reply.status_code == 200
        events = list(sse_events(reply.iter_lines()))
    assert events[-1] == "[DONE]"
    error = assert_error_body(events[-2], "worker_failed")
    assert "INTERNAL" in error["message"] and "stub engine crashed" in error["message"]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-2])
    assert text == "Hello world,"  # the three tokens sent before the failure
    assert not any(isinstance(e, dict) and "usage" in e for e in events)
    assert front.metric("pdserve_requests_total", endpoint="chat_completions", status="502") == 1


def test_stream_that_ends_early_is_an_error_event(stub_front: StubFront) -> None:
    front, _, _ = stub_front([StubWorker("prefill-0", "prefill")],
                             [StubWorker("decode-0", "decode", generate="eof", fail_after=1)])
    with httpx.stream("POST", f"{front.url}/v1/completions", timeout=30,
                      json={"model": MODEL_NAME, "prompt": "hi", "max_tokens": 9, "stream": True}) as reply:
        events = list(sse_events(reply.iter_lines()))
    error = assert_error_body(events[-2], "worker_failed")
    assert "ended before the request finished" in error["message"]


def test_worker_failing_without_streaming_is_502(stub_front: StubFront) -> None:
    front, _, _ = stub_front([StubWorker("prefill-0", "prefill")],
                             [StubWorker("decode-0", "decode", generate="fail", fail_after=2)])
    error = assert_error(httpx.post(f"{front.url}/v1/chat/completions", json=chat(max_tokens=20), timeout=30),
                         502, "worker_failed")
    assert "stub engine crashed" in error["message"]


def test_client_disconnect_mid_stream_aborts_on_the_decode_worker(stub_front: StubFront) -> None:
    front, _, (decode,) = stub_front([StubWorker("prefill-0", "prefill")],
                                     [StubWorker("decode-0", "decode", generate="drip", drip_s=0.02)])
    with httpx.stream("POST", f"{front.url}/v1/completions", timeout=30,
                      json={"model": MODEL_NAME, "prompt": "tell me a long story", "max_tokens": 900,
                            "stream": True}) as reply:
        assert reply.status_code == 200
        seen = 0
        for event in sse_events(reply.iter_lines()):
            seen += isinstance(event, dict) and bool(event["choices"][0]["text"])
            if seen >= 3:
                break
    (request_id,) = decode.calls
    assert front.wait_until(lambda: request_id in decode.aborts, 5), decode.aborts
    assert front.wait_until(lambda: request_id in decode.cancelled, 5)  # the Generate RPC was cancelled too
    assert front.metric("pdserve_aborts_total", role="decode") == 1
    assert front.wait_until(lambda: front.service.decode.get("decode-0").in_flight == 0, 5)


def test_client_disconnect_while_collecting_a_non_streamed_answer_aborts_on_the_decode_worker(
        stub_front: StubFront) -> None:
    front, _, (decode,) = stub_front([StubWorker("prefill-0", "prefill")],
                                     [StubWorker("decode-0", "decode", generate="drip", drip_s=0.02)])
    # A raw connection, closed once the decode worker is streaming (not after a fixed client timeout,
    # which on a loaded host can fire while the request is still being placed).
    body = json.dumps({"model": MODEL_NAME, "prompt": "tell me a long story", "max_tokens": 900}).encode()
    url = httpx.URL(front.url)
    with socket.create_connection((url.host, url.port), timeout=10) as conn:
        conn.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: pdserve\r\ncontent-type: application/json\r\n"
                     b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert front.wait_until(lambda: len(decode.calls) == 1, 10), "the decode never started"
    assert front.wait_until(lambda: decode.calls[0] in decode.aborts, 5), decode.aborts
    assert front.metric("pdserve_aborts_total", role="decode") == 1
    assert front.metric("pdserve_requests_total", endpoint="completions", status="client_gone") == 1


def test_client_disconnect_during_prefill_aborts_on_the_prefill_worker(stub_front: StubFront) -> None:
    front, (prefill,), (decode,) = stub_front([StubWorker("prefill-0", "prefill", prefill="stall")],
                                              [StubWorker("decode-0", "decode")])
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{front.url}/v1/chat/completions", json=chat(), timeout=0.5)
    assert front.wait_until(lambda: len(prefill.aborts) == 1, 5), prefill.aborts
    assert prefill.aborts == prefill.calls
    assert front.metric("pdserve_aborts_total", role="prefill") == 1
    assert not decode.calls
    assert front.service.prefill is not None
    assert front.wait_until(lambda: front.service.prefill.get("prefill-0").in_flight == 0, 5)  # type: ignore[union-attr]


def _metrics_text(front: FrontEnd) -> str:
    return httpx.get(f"{front.url}/metrics", timeout=5).text


def test_dead_decode_pool_is_503(tiny_model_dir: Path, tokenizer: Tokenizer, harness_loop: LoopThread,
                                 start_workers: StartWorkers) -> None:
    config = sim_config(tiny_model_dir, prefill=0, decode=1)
    launcher, endpoints = start_workers(config)
    front = FrontEnd.start(harness_loop, config, endpoints, tokenizer)
    try:
        ok = httpx.post(f"{front.url}/v1/chat/completions", json=chat(max_tokens=3), timeout=30)
        assert ok.status_code == 200 and ok.headers["x-prefill-worker"] == "none"
        assert ok.headers["x-decode-worker"] == "decode-0" and ok.headers["x-route-reason"]
        assert f'pdserve_worker_load{{figure="running",model="{MODEL_NAME}",worker="decode-0"}}' in _metrics_text(front)
        (endpoint,) = endpoints
        os.killpg(endpoint.pid, signal.SIGKILL)  # the worker runs in its own session: its group is ours
        assert front.wait_until(lambda: httpx.get(f"{front.url}/health", timeout=5).status_code == 503, 10)
        down = httpx.get(f"{front.url}/health", timeout=5)
        assert int(down.headers["retry-after"]) >= 1
        health = down.json()
        assert health["status"] == "unavailable"
        assert health["decode"] == [{"id": "decode-0", "healthy": False, "draining": False}]
        for stream in (False, True):
            error = assert_error(httpx.post(f"{front.url}/v1/chat/completions", json=chat(stream=stream),
                                            timeout=10), 503, "no_healthy_worker")
            assert error["type"] == "service_unavailable"
            assert "no healthy decode worker" in error["message"].lower()
        assert front.metric("pdserve_worker_healthy", worker="decode-0") == 0
        # Its last load figures are gone, not shown forever.
        assert 'worker="decode-0"' not in "".join(
            line for line in _metrics_text(front).splitlines(keepends=True) if line.startswith("pdserve_worker_load"))
    finally:
        front.stop()
        launcher.stop()
