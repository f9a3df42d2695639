"""The cpu_vllm suite's P/D proxy, driven with the official OpenAI client against two simulated workers
that speak vLLM's NixlConnector request shape: the decode pulls the prefill's KV (its cached tokens say
so) and answers what one worker alone answers; an error from the prefill server comes back as it was."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.suites.pd_proxy import REMOTE_DECODE, decode_body, prefill_body
from transfer.ports import free_ports

ROOT = Path(__file__).resolve().parents[3]
SIM = ["--profile", "tiny-fast", "--set", "speedup=20", "--set", "num_blocks=1024", "--set", "max_model_len=1024"]


def test_the_prefill_request_asks_for_one_token_kept_for_a_remote_decode() -> None:
    body = {"model": "m", "prompt": "hi", "max_tokens": 9, "stream": True, "stream_options": {"include_usage": True}}
    first = prefill_body(body)
    assert first == {"model": "m", "prompt": "hi", "max_tokens": 1, "stream": False,
                     "kv_transfer_params": REMOTE_DECODE}
    assert body["max_tokens"] == 9 and "kv_transfer_params" not in body  # the caller's body is left alone
    assert decode_body(body, {"remote_engine_id": "e"})["kv_transfer_params"] == {"remote_engine_id": "e"}


@pytest.fixture(scope="module")
def pd_pair(tiny_model_dir: Path) -> Iterator[tuple[str, str]]:
    """Two sim workers (prefill, decode) in their own processes and the proxy in front; (proxy, decode) URLs."""
    procs = [subprocess.Popen([sys.executable, "-m", "worker.sim_http", *SIM, "--base-port", "0", "--tokenizer",
                               str(tiny_model_dir), "--served-model-name", "tiny", "--worker-id-prefix", f"w{i}"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True) for i in range(2)]
    try:
        prefill, decode = (json.loads(p.stdout.readline())["url"] for p in procs if p.stdout)
        port = free_ports(1)[0]
        procs.append(subprocess.Popen([sys.executable, "-m", "bench.suites.pd_proxy", "--prefill", prefill,
                                       "--decode", decode, "--port", str(port)], cwd=ROOT))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and procs[-1].poll() is None, "the proxy did not start"
            time.sleep(0.1)
        yield url, decode
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_a_streamed_answer_through_the_proxy_is_decoded_from_the_pulled_kv(pd_pair: tuple[str, str]) -> None:
    openai = pytest.importorskip("openai")
    proxy, decode = pd_pair
    messages = [{"role": "user", "content": "Tell me about the sea, at some length please."}]
    alone = openai.OpenAI(base_url=f"{decode}/v1", api_key="x").chat.completions.create(
        model="tiny", messages=messages, max_tokens=8, temperature=0)
    stream = openai.OpenAI(base_url=f"{proxy}/v1", api_key="x").chat.completions.create(
        model="tiny", messages=messages, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True})
    text, usage = "", None
    for chunk in stream:
        text += "".join(c.delta.content or "" for c in chunk.choices)
        usage = chunk.usage or usage
    assert text and text == alone.choices[0].message.content
    assert usage is not None and usage.completion_tokens == 8
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens - 1  # pulled from the prefill worker


def test_an_error_from_the_prefill_server_is_passed_back(pd_pair: tuple[str, str]) -> None:
    proxy, _ = pd_pair
    reply = httpx.post(f"{proxy}/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 4,
                                                       "temperature": 9.0}, timeout=10)
    assert reply.status_code == 400 and "temperature" in reply.text
