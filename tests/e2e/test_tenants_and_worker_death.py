"""Over real vLLM CPU workers, a deployment of its own with API keys (1 prefill + 1 decode, the local
launcher): tenants do not share prefix caches; a decode worker SIGKILLed mid-stream ends the stream with
an SSE error event within 2 s, and comes back at a new address and serves again; a prefill worker
SIGKILLed under a steady load: requests meanwhile are prefilled on the decode worker or fail fast, and it
comes back and prefills again. The kills come last: this module's deployment is not reused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.e2e.proctree import worker_processes
from tests.e2e.servers import ROOT, Server, start_pdserve

pytestmark = pytest.mark.e2e

LONG_PROMPT = "Here is a long shared document about the history of tea. " * 40  # ~500 tokens: many 32-token blocks


@dataclass
class KeyedServer:
    server: Server
    keys: dict[str, str]  # tenant -> API key; "ops" is an admin key

    def workers(self) -> dict[str, dict[str, object]]:
        reply = httpx.get(f"{self.server.url}/admin/workers", timeout=10,
                          headers={"Authorization": f"Bearer {self.keys['ops']}"})
        assert reply.status_code == 200, reply.text
        return {str(row["id"]): row for row in reply.json()["data"]}

    def back(self, worker: str, before: dict[str, object], timeout_s: float = 300) -> dict[str, object]:
        """Wait until ``worker`` is healthy again after a restart; its registry row."""
        deadline = time.monotonic() + timeout_s
        while True:
            row = self.workers()[worker]
            if row["state"] == "healthy" and row["restarts"] == int(str(before["restarts"])) + 1:
                return row
            assert time.monotonic() < deadline, f"{worker} did not come back: {row}"
            time.sleep(1)


def add_key(keys_file: Path, tenant: str, admin: bool = False) -> str:
    """A new key of ``tenant`` from the real CLI (printed once on stdout)."""
    args = [sys.executable, "-m", "orchestrator.cli", "keys", "add", tenant, "--file", str(keys_file)]
    done = subprocess.run([*args, "--admin"] if admin else args,
                          cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def keyed(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedServer]:
    keys_file = tmp_path_factory.mktemp("keys") / "keys.jsonl"
    keys = {tenant: add_key(keys_file, tenant) for tenant in ("acme", "globex")}
    keys["ops"] = add_key(keys_file, "ops", admin=True)
    server = start_pdserve("configs/tiny-cpu.yaml", [f"model.path={tiny_model}", f"auth.keys_file={keys_file}"],
                           launcher="local")
    try:
        yield KeyedServer(server, keys)
    finally:
        server.stop()


def cached_tokens(keyed: KeyedServer, tenant: str) -> int:
    client = OpenAI(base_url=f"{keyed.server.url}/v1", api_key=keyed.keys[tenant], max_retries=0, timeout=120)
    reply = client.completions.create(model="tiny-llama", prompt=LONG_PROMPT, max_tokens=2, temperature=0)
    assert reply.usage is not None and reply.usage.prompt_tokens > 400
    details = reply.usage.prompt_tokens_details
    return (details.cached_tokens or 0) if details is not None else 0


def test_one_tenants_prompt_never_hits_another_tenants_cache(keyed: KeyedServer) -> None:
    assert cached_tokens(keyed, "acme") == 0  # first time anywhere
    assert cached_tokens(keyed, "acme") > 0  # the same tenant hits its own cache
    assert cached_tokens(keyed, "globex") == 0  # another tenant, same prompt: a miss
    assert cached_tokens(keyed, "globex") > 0


def test_decode_worker_killed_mid_stream_ends_the_stream_within_2s(keyed: KeyedServer) -> None:
    url = keyed.server.url
    body = {"model": "tiny-llama", "prompt": "tell me a long story", "max_tokens": 1500, "temperature": 0,
            "ignore_eos": True, "stream": True}
    headers = {"Authorization": f"Bearer {keyed.keys['acme']}"}
    decode = worker_processes(keyed.server.proc.pid, "decode-0")
    before = keyed.workers()["decode-0"]
    with httpx.stream("POST", f"{url}/v1/completions", json=body, headers=headers, timeout=60) as reply:
        assert reply.status_code == 200
        lines = reply.iter_lines()
        texts = 0
        for line in lines:
            if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["text"]:
                texts += 1
                if texts >= 3:
                    break
        killed_at = time.monotonic()
        for pid in decode:  # the worker and its engine core: processes this test's server started
            os.kill(pid, signal.SIGKILL)
        rest = [line[6:] for line in lines if line.startswith("data: ")]
        ended_after = time.monotonic() - killed_at
    assert ended_after < 2.0, ended_after
    assert rest[-1] == "[DONE]"
    error = json.loads(rest[-2])["error"]
    assert error["code"] == "worker_failed" and "decode-0" in error["message"]
    deadline = time.monotonic() + 15
    while httpx.get(f"{url}/health", timeout=5).status_code != 503:
        assert time.monotonic() < deadline, "the dead decode worker was never reported"
        time.sleep(0.2)
    assert httpx.get(f"{url}/health", timeout=5).json()["pools"]["decode"] == {"healthy": 0, "total": 1}
    # The launcher restarts it: same id, a new process and port, and it serves again.
    after = keyed.back("decode-0", before)
    assert after["address"] != before["address"] and after["pid"] != before["pid"]
    client = OpenAI(base_url=f"{url}/v1", api_key=keyed.keys["acme"], max_retries=0, timeout=120)
    reply = client.completions.with_raw_response.create(model="tiny-llama", prompt="hello there", max_tokens=4,
                                                         temperature=0)
    assert reply.headers["x-decode-worker"] == "decode-0"


def test_prefill_worker_killed_under_load_comes_back(keyed: KeyedServer) -> None:
    url = keyed.server.url
    before = keyed.workers()["prefill-0"]
    prefill = worker_processes(keyed.server.proc.pid, "prefill-0")
    results: list[tuple[int, str, float]] = []
    stop = threading.Event()

    def steady() -> None:  # one client, ~10 requests/s, bounded in count and time
        with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {keyed.keys['acme']}"}) as client:
            while not stop.wait(0.1) and len(results) < 3000:
                start = time.monotonic()
                body = {"model": "tiny-llama", "prompt": f"{len(results)} tell me about tea", "max_tokens": 4,
                        "temperature": 0}
                try:
                    reply = client.post(f"{url}/v1/completions", json=body)
                    status, prefill_worker = reply.status_code, reply.headers.get("x-prefill-worker", "")
                except httpx.HTTPError as exc:  # recorded, never the end of the load
                    status, prefill_worker = 0, type(exc).__name__
                results.append((status, prefill_worker, time.monotonic() - start))

    load = threading.Thread(target=steady, daemon=True)
    load.start()
    try:
        deadline = time.monotonic() + 120
        while len(results) < 3:
            assert time.monotonic() < deadline and load.is_alive(), results
            time.sleep(0.2)
        for pid in prefill:
            os.kill(pid, signal.SIGKILL)
        after = keyed.back("prefill-0", before)
        mark = len(results)
        deadline = time.monotonic() + 120
        while not any(r[1] == "prefill-0" for r in results[mark:]):
            assert time.monotonic() < deadline, results[mark:]
            time.sleep(0.5)
    finally:
        stop.set()
        load.join(120)
    assert after["address"] != before["address"] and after["pid"] != before["pid"]
    # Meanwhile the decode worker prefilled locally ("none") or a request failed fast; none hung.
    assert all(seconds < 30 for _, _, seconds in results), max(r[2] for r in results)
    served = [r for r in results if r[0] == 200]
    assert len(served) >= len(results) - 2, [r for r in results if r[0] != 200]
    assert any(r[1] == "none" for r in served)  # local prefills while the prefill worker was away
