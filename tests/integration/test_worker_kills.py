"""Failures of real simulated worker processes, each worker in its own process so that one can be
SIGKILLed alone: a decode worker killed mid-stream (SSE error event / 502 within 2 s), a prefill worker
killed after its handoff (the pull fails and the request is prefilled again on the other worker), a lease
that runs out before the pull (retried, recomputed or failed as configured; never text from freed
blocks), and a burst of requests spread over the decode workers (placed requests count as load at
once). Times are asserted loosely, outcomes exactly."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import StartWorkers
from pd_harness import MODEL_NAME, FrontEnd, LoopThread, assert_error, assert_error_body, sim_config, sse_events

from orchestrator.api.text import Tokenizer
from orchestrator.config import PdserveConfig
from orchestrator.launch.process import WorkerEndpoint

pytestmark = pytest.mark.timeout(90)

PROMPT = "one two three four five six seven eight nine ten " * 4
SLOW_PULL = {"speedup": 1.0, "link_latency_s": 1.5}  # every KV pull takes 1.5 s


class Deployment:
    """Simulated workers (one process each) and a front end over them; ``kill`` SIGKILLs one worker."""

    def __init__(self, config: PdserveConfig, start_workers: StartWorkers, loop: LoopThread,
                 tokenizer: Tokenizer) -> None:
        self.launcher, self.endpoints = start_workers(config)
        self.front = FrontEnd.start(loop, config, self.endpoints, tokenizer)
        self.url = self.front.url

    def endpoint(self, worker_id: str) -> WorkerEndpoint:
        return next(e for e in self.endpoints if e.worker_id == worker_id)

    def kill(self, worker_id: str) -> None:
        os.killpg(self.endpoint(worker_id).pid, signal.SIGKILL)  # its own session: the group is ours

    def close(self) -> None:
        self.front.stop()
        self.launcher.stop()


@pytest.fixture
def deploy(tiny_model_dir: Path, tokenizer: Tokenizer, harness_loop: LoopThread,
           start_workers: StartWorkers) -> Iterator[Any]:
    made: list[Deployment] = []

    def make(**kwargs: Any) -> Deployment:
        config = sim_config(tiny_model_dir, process_per_worker=True, **kwargs)
        made.append(Deployment(config, start_workers, harness_loop, tokenizer))
        return made[-1]

    yield make
    for deployment in made:
        deployment.close()


def completion(max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, **extra}


def reference_text(url: str, max_tokens: int) -> str:
    reply = httpx.post(f"{url}/v1/completions", json=completion(max_tokens, cache_salt="reference"), timeout=30)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["choices"][0]["text"])


def test_decode_workers_killed_mid_answer_end_both_kinds_of_answer_within_2s(deploy: Any) -> None:
    d = deploy(prefill=1, decode=2, engine_args={"speedup": 1.0, "step_base_s": 0.02})  # ~50 tokens/s
    with ThreadPoolExecutor(1) as pool, httpx.stream("POST", f"{d.url}/v1/completions", timeout=30,
                                                     json=completion(500, stream=True)) as streamed:
        assert streamed.status_code == 200
        events = sse_events(streamed.iter_lines())
        for _ in range(4):  # the role chunk, then text
            assert isinstance(next(events), dict)

        def whole() -> tuple[httpx.Response, float]:
            reply = httpx.post(f"{d.url}/v1/completions", json=completion(500), timeout=30)
            return reply, time.monotonic()

        collected = pool.submit(whole)
        decode = d.front.service.decode
        assert d.front.wait_until(lambda: sum(h.in_flight for h in decode) == 2, 10)
        time.sleep(0.3)  # both decoding
        killed_at = time.monotonic()
        d.kill("decode-0")
        d.kill("decode-1")
        rest = list(events)
        stream_ended = time.monotonic() - killed_at
        reply, replied_at = collected.result(10)
    assert stream_ended < 2.0, stream_ended
    assert rest[-1] == "[DONE]" and assert_error_body(rest[-2], "worker_failed")
    assert replied_at - killed_at < 2.0
    assert_error(reply, 502, "worker_failed")
    assert d.front.wait_until(lambda: httpx.get(f"{d.url}/health", timeout=5).status_code == 503, 10)
    health = httpx.get(f"{d.url}/health", timeout=5).json()
    assert health["status"] == "unavailable"
    assert health["pools"] == {"prefill": {"healthy": 1, "total": 1}, "decode": {"healthy": 0, "total": 2}}


def test_prefill_worker_killed_after_its_handoff_is_prefilled_again_on_the_other(deploy: Any) -> None:
    d = deploy(prefill=2, decode=1, engine_args=SLOW_PULL)
    expected = reference_text(d.url, 24)
    with httpx.stream("POST", f"{d.url}/v1/completions", timeout=30,
                      json=completion(24, stream=True, cache_salt="killed")) as streamed:
        assert streamed.status_code == 200
        first_prefill = streamed.headers["x-prefill-worker"]
        d.kill(first_prefill)  # the decode worker is now pulling from a dead process
        chunks = [e for e in sse_events(streamed.iter_lines()) if isinstance(e, dict)]
    assert "".join(c["choices"][0]["text"] for c in chunks) == expected
    assert d.front.metric("pdserve_kv_handoffs_void_total", reason="source_gone", action="retry") == 1
    assert d.front.wait_until(lambda: httpx.get(f"{d.url}/health", timeout=5).json()["status"] == "degraded", 10)
    assert httpx.get(f"{d.url}/health", timeout=5).json()["pools"]["prefill"] == {"healthy": 1, "total": 2}


@pytest.mark.parametrize("policy", ["recompute", "retry", "fail"])
def test_a_lease_that_runs_out_before_the_pull_never_gives_text_from_freed_blocks(deploy: Any, policy: str) -> None:
    d = deploy(prefill=1, decode=1, engine_args=SLOW_PULL,
               transfer={"lease_timeout_s": 1, "on_pull_failure": policy})  # the pull outlasts the lease
    reply = httpx.post(f"{d.url}/v1/completions", json=completion(16), timeout=30)
    void = {action: d.front.metric("pdserve_kv_handoffs_void_total", reason="lease_expired", action=action)
            for action in ("retry", "recompute", "fail")}
    # The prefill worker freed the blocks at expiry and says so in its load report.
    assert d.front.wait_until(lambda: d.front.metric("pdserve_worker_load", worker="prefill-0",
                                                     figure="kv_leases_expired") >= 1, 5)
    if policy == "recompute":  # the decode worker prefilled the prompt itself: the right answer
        assert reply.status_code == 200, reply.text
        assert void == {"retry": 0, "recompute": 1, "fail": 0}
        colocated = deploy(prefill=0, decode=1)  # no handoff at all
        assert reply.json()["choices"][0]["text"] == reference_text(colocated.url, 16)
    else:  # a retry's lease runs out too: an error, never text
        assert_error(reply, 502, "worker_failed")
        assert "lease" in reply.json()["error"]["message"]
        assert void == {"retry": 1 if policy == "retry" else 0, "recompute": 0, "fail": 1}


def test_a_burst_is_spread_over_the_decode_workers(deploy: Any) -> None:
    d = deploy(prefill=1, decode=2, engine_args={"speedup": 1.0, "step_base_s": 0.01, "max_num_seqs": 64,
                                                     "max_num_batched_tokens": 4096})

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=40)) as client:
            return await asyncio.gather(*(client.post(f"{d.url}/v1/completions",
                                                      json=completion(20, cache_salt=f"burst-{i}"))
                                          for i in range(40)))

    replies = asyncio.run(burst())  # 40 prefills in one batch: their decode placements come back to back
    assert all(r.status_code == 200 for r in replies)
    placed = [r.headers["x-decode-worker"] for r in replies]
    assert min(placed.count("decode-0"), placed.count("decode-1")) >= 15, sorted(placed)
