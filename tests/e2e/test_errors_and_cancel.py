"""Bad input gets an OpenAI-style 4xx and loses nothing; a client that disconnects mid-stream gets its
request aborted on the decode worker."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.proctree import cpu_seconds, worker_processes
from tests.e2e.promtext import sample
from tests.e2e.servers import Server

pytestmark = pytest.mark.e2e


def _error(reply: httpx.Response, status: int) -> dict:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "type" in body["error"]
    return body["error"]


@pytest.mark.parametrize(
    ("payload", "param_hint"),
    [
        ({"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
        ({"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "temperature": 7}, "temperature"),
        ({"model": "tiny-llama", "messages": []}, "messages"),
        ({"model": "tiny-llama", "messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "n": 3}, "n"),
    ],
)
def test_invalid_fields_are_400(pd_server: Server, payload: dict, param_hint: str) -> None:
    err = _error(httpx.post(f"{pd_server.url}/v1/chat/completions", json=payload, timeout=30), 400)
    assert err["type"] == "invalid_request_error"
    assert param_hint in (err["param"] or "") or param_hint in err["message"]


def test_invalid_json_is_400(pd_server: Server) -> None:
    reply = httpx.post(f"{pd_server.url}/v1/chat/completions", content=b"{not json",
                       headers={"content-type": "application/json"}, timeout=30)
    err = _error(reply, 400)
    assert "JSON" in err["message"]


def test_prompt_beyond_context_is_400(pd_server: Server) -> None:
    prompt = [500] * 2000
    err = _error(httpx.post(f"{pd_server.url}/v1/completions",
                            json={"model": "tiny-llama", "prompt": prompt, "max_tokens": 100}, timeout=30), 400)
    assert err["code"] == "context_length_exceeded"
    assert "2048" in err["message"]
    err = _error(httpx.post(f"{pd_server.url}/v1/completions",
                            json={"model": "tiny-llama", "prompt": [500] * 2100}, timeout=30), 400)
    assert err["code"] == "context_length_exceeded"


def test_unknown_model_is_404(pd_server: Server) -> None:
    err = _error(httpx.post(f"{pd_server.url}/v1/completions",
                            json={"model": "gpt-9", "prompt": "hi", "max_tokens": 3}, timeout=30), 404)
    assert err["code"] == "model_not_found"
    # The server still serves after bad input.
    ok = httpx.post(f"{pd_server.url}/v1/completions", json={"model": "tiny-llama", "prompt": "hi", "max_tokens": 3},
                    timeout=60)
    assert ok.status_code == 200


def _decode_running(url: str) -> float:
    return sample(url, "pdserve_worker_load", worker="decode-0", figure="running")


def test_client_disconnect_aborts_on_decode_worker(pd_server: Server) -> None:
    aborts_before = sample(pd_server.url, "pdserve_aborts_total", role="decode")
    decode_procs = worker_processes(pd_server.proc.pid, "decode-0")
    body = {"model": "tiny-llama", "prompt": "tell me a long story", "max_tokens": 1500, "temperature": 0,
            "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{pd_server.url}/v1/completions", json=body, timeout=60) as reply:
        assert reply.status_code == 200
        seen = 0
        for line in reply.iter_lines():
            if line.startswith("data: ") and '"text":"' in line:
                seen += 1
            if seen >= 3:
                break
    # Closing the stream must abort the request on the decode worker well before 1,500 tokens, and
    # the worker's load must say so although vLLM publishes no statistics once it has nothing to step.
    # All three figures are awaited together: a poll can land after vLLM's last step (running 0, one
    # block not yet returned) but before the adapter's abort has returned (the request still live).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if sample(pd_server.url, "pdserve_aborts_total", role="decode") > aborts_before and \
                _decode_running(pd_server.url) == 0 and \
                sample(pd_server.url, "pdserve_worker_load", worker="decode-0", figure="kv_usage") == 0:
            break
        time.sleep(0.5)
    assert sample(pd_server.url, "pdserve_aborts_total", role="decode") > aborts_before
    assert _decode_running(pd_server.url) == 0
    assert sample(pd_server.url, "pdserve_worker_load", worker="decode-0", figure="kv_usage") == 0
    # And the engine really stopped: decoding 1,500 tokens keeps a core busy for half a minute; an idle
    # worker (gRPC server, NIXL progress thread with its 1 ms sleep, load polls) uses a few percent of
    # one. Within 15 s of the disconnect, two seconds in a row must look idle.
    quiet, windows = 0, []
    deadline = time.monotonic() + 15
    while quiet < 2 and time.monotonic() < deadline:
        before = cpu_seconds(decode_procs)
        time.sleep(1.0)
        windows.append(round(cpu_seconds(decode_procs) - before, 2))
        quiet = quiet + 1 if windows[-1] < 0.2 else 0
    assert quiet == 2, f"decode worker CPU-s per second after the abort: {windows} (still decoding?)"
