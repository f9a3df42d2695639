"""``python -m worker.sim_http``: several sim engines in one process, each on its own HTTP port with vLLM's
API and its own KV event endpoint; P/D across two of them over real sockets with the official OpenAI
client's request shapes; a SIGTERM to the process shuts everything down and ``run`` returns."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import msgspec
import pytest
import zmq
import zmq.asyncio

from protocol.types import BlockStored
from worker import sim_http
from worker.engines.sim.zmq_events import KVEventBatch
from worker.engines.vllm_events import convert_batch

ROOT = Path(__file__).resolve().parents[3]
SIM = ["--profile", "tiny-fast", "--set", "speedup=20", "--set", "num_blocks=1024", "--set", "max_model_len=1024"]


def test_args_are_checked() -> None:
    with pytest.raises(SystemExit):
        sim_http.parse_args([*SIM, "--base-port", "0", "--host", "0.0.0.0"])
    with pytest.raises(SystemExit):
        sim_http.parse_args([*SIM, "--base-port", "0", "--workers", "0"])
    args = sim_http.parse_args([*SIM, "--base-port", "0", "--set", "eos_token_id=5"])
    assert sim_http.overrides(args, (49152, 2)) == {"vocab_size": 49152, "eos_token_id": 5, "speedup": 20,
                                                    "num_blocks": 1024, "max_model_len": 1024}


async def test_workers_serve_pd_over_http_and_stop_on_sigterm(tiny_model_dir: Path) -> None:
    openai = pytest.importorskip("openai")
    args = sim_http.parse_args([*SIM, "--workers", "2", "--base-port", "0", "--tokenizer", str(tiny_model_dir),
                                "--served-model-name", "tiny"])
    lines: list[dict[str, object]] = []
    serving = asyncio.create_task(sim_http.run(args, ready=lines.append))
    try:
        for _ in range(500):
            if len(lines) == 2 or serving.done():
                break
            await asyncio.sleep(0.02)
        assert [line["worker"] for line in lines] == [0, 1] and lines[0]["url"] != lines[1]["url"]
        events = [str(line["events"]) for line in lines]
        assert all(e.startswith("ipc://") and Path(e[len("ipc://"):]).exists() for e in events)
        prefill_url, decode_url = (f"{line['url']}/v1" for line in lines)
        ctx = zmq.asyncio.Context()
        subscriber = ctx.socket(zmq.SUB)
        subscriber.setsockopt(zmq.SUBSCRIBE, b"")
        subscriber.connect(events[0])
        await asyncio.sleep(0.2)  # a SUB socket misses what is sent before it has joined
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(f"{lines[1]['url']}/health")).status_code == 200
            prefill = openai.AsyncOpenAI(base_url=prefill_url, api_key="x", http_client=http)
            decode = openai.AsyncOpenAI(base_url=decode_url, api_key="x", http_client=http)
            messages = [{"role": "user", "content": "Tell me about the sea."}]
            plain = await decode.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0)
            first = await prefill.chat.completions.create(
                model="tiny", messages=messages, max_tokens=1, temperature=0,
                extra_body={"kv_transfer_params": {"do_remote_decode": True}})
            params = first.model_extra["kv_transfer_params"] if first.model_extra else None
            assert params is not None and params["remote_engine_id"] == lines[0]["engine_id"]
            _, seq, payload = await asyncio.wait_for(subscriber.recv_multipart(), 5)
            batch = convert_batch(int.from_bytes(seq, "big"), msgspec.msgpack.Decoder(KVEventBatch).decode(payload))
            stored = [e for e in batch.events if isinstance(e, BlockStored)]
            assert stored and stored[0].parent_block_hash is None and len(stored[0].token_ids) % 4 == 0
            subscriber.close(linger=0)
            ctx.term()
            stream = await decode.chat.completions.create(
                model="tiny", messages=messages, max_tokens=6, temperature=0, stream=True,
                stream_options={"include_usage": True},
                extra_body={"kv_transfer_params": params})
            text, usage = "", None
            async for chunk in stream:
                text += "".join(c.delta.content or "" for c in chunk.choices)
                usage = chunk.usage or usage
            assert text == plain.choices[0].message.content and text
            assert usage is not None and usage.completion_tokens == 6
            assert usage.prompt_tokens_details is not None
            assert usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens - 1  # pulled, not local
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(serving, 10)
    finally:
        if not serving.done():
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
    assert not any(Path(e[len("ipc://"):]).exists() for e in events)
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"{lines[0]['url']}/health")


async def running_after(http: httpx.AsyncClient, url: str, seconds: float) -> tuple[float, float]:
    """``vllm:num_requests_running`` and the abort count once running is 0, or after ``seconds``."""
    running = aborts = -1.0
    for _ in range(int(seconds / 0.05)):
        lines = (await http.get(f"{url}/metrics")).text.splitlines()
        running = next(float(x.split()[-1]) for x in lines if x.startswith("vllm:num_requests_running{"))
        aborts = next(float(x.split()[-1]) for x in lines
                      if x.startswith("vllm:request_success_total{") and 'finished_reason="abort"' in x)
        if running == 0:
            break
        await asyncio.sleep(0.05)
    return running, aborts


async def test_a_client_that_leaves_aborts_its_request() -> None:
    args = sim_http.parse_args([*SIM, "--set", "speedup=0.05", "--base-port", "0"])  # 20 ms steps
    lines: list[dict[str, object]] = []
    stop = asyncio.Event()
    serving = asyncio.create_task(sim_http.run(args, ready=lines.append, stop=stop))
    try:
        for _ in range(500):
            if lines or serving.done():
                break
            await asyncio.sleep(0.02)
        url = str(lines[0]["url"])
        body = {"prompt": list(range(1, 30)), "max_tokens": 400, "ignore_eos": True}  # ~8 s of decoding
        async with httpx.AsyncClient() as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post(f"{url}/v1/completions", json=body, timeout=0.5)
            assert await running_after(http, url, 3) == (0, 1)
            async with http.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}) as resp:
                async for _ in resp.aiter_lines():
                    break  # one event, then leave
            assert await running_after(http, url, 3) == (0, 2)
    finally:
        stop.set()
        await asyncio.wait_for(serving, 10)


@pytest.mark.timeout(60)
def test_two_processes_hand_kv_over_side_channels_and_exit_0_on_sigterm() -> None:
    procs = [subprocess.Popen([sys.executable, "-m", "worker.sim_http", *SIM, "--base-port", "0",
                               "--worker-id-prefix", f"proc{i}"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        assert all(p.stdout is not None for p in procs)
        p_url, d_url = (json.loads(p.stdout.readline())["url"] for p in procs if p.stdout)  # blocks until ready
        body = {"prompt": list(range(200, 243)), "max_tokens": 6, "temperature": 0, "return_token_ids": True}
        prefill = {**body, "kv_transfer_params": {"do_remote_decode": True}}
        with httpx.Client(timeout=10) as http:
            params = http.post(f"{p_url}/v1/completions", json=prefill).json()["kv_transfer_params"]
            decoded = http.post(f"{d_url}/v1/completions", json={**body, "kv_transfer_params": params}).json()
            assert decoded["usage"]["prompt_tokens_details"]["cached_tokens"] == 42
            local = http.post(f"{p_url}/v1/completions", json=body).json()
            assert decoded["choices"][0]["token_ids"] == local["choices"][0]["token_ids"]
            again = http.post(f"{d_url}/v1/completions", json={**body, "kv_transfer_params": params})
            assert again.status_code == 500 and "source_gone" in again.json()["error"]["message"]  # freed on read
            params = http.post(f"{p_url}/v1/completions", json=prefill).json()["kv_transfer_params"]
            procs[0].send_signal(signal.SIGTERM)
            assert procs[0].wait(10) == 0
            gone = http.post(f"{d_url}/v1/completions", json={**body, "kv_transfer_params": params})
            assert gone.status_code == 500 and "unreachable" in gone.json()["error"]["message"]
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(10) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
