"""Sixty non-streamed requests whose clients all leave mid-decode: within 2 s no worker runs any of them
(each worker's own load report: engine running/waiting and the worker's in-flight calls)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import StartWorkers
from pd_harness import MODEL_NAME, FrontEnd, LoopThread, sim_config

from orchestrator.api.text import Tokenizer
from protocol.types import WorkerLoad

pytestmark = pytest.mark.timeout(120)
CLIENTS = 60


@pytest.fixture()
def front(tiny_model_dir: Path, tokenizer: Tokenizer, harness_loop: LoopThread,
          start_workers: StartWorkers) -> Iterator[FrontEnd]:
    # Slow simulated engines (speedup 0.5) with room for every request, so all 60 are still decoding
    # when their clients leave.
    config = sim_config(tiny_model_dir, prefill=2, decode=2,
                        engine_args={"speedup": 0.5, "num_blocks": 40_000, "max_num_seqs": 64})
    _, endpoints = start_workers(config)
    front = FrontEnd.start(harness_loop, config, endpoints, tokenizer)
    yield front
    front.stop()


def _loads(front: FrontEnd) -> dict[str, WorkerLoad]:
    handles = [*(front.service.prefill or []), *front.service.decode]
    return {h.worker_id: front.loop.run(h.client.load(timeout_s=5)) for h in handles}


def _busy(front: FrontEnd) -> dict[str, tuple[int, int, int]]:
    return {worker: (load.engine.running, load.engine.waiting, load.in_flight)
            for worker, load in _loads(front).items()
            if load.engine.running or load.engine.waiting or load.in_flight}


def test_sixty_clients_that_leave_leave_nothing_running(front: FrontEnd) -> None:
    url = httpx.URL(front.url)
    body = json.dumps({"model": MODEL_NAME, "prompt": "tell me a long story", "max_tokens": 900,
                       "temperature": 0, "ignore_eos": True}).encode()
    request = (b"POST /v1/completions HTTP/1.1\r\nHost: pdserve\r\ncontent-type: application/json\r\n"
               b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    conns = [socket.create_connection((url.host, url.port), timeout=10) for _ in range(CLIENTS)]
    try:
        for conn in conns:
            conn.sendall(request)
        placed = lambda: sum(h.in_flight for h in front.service.decode) == CLIENTS  # noqa: E731
        assert front.wait_until(placed, 30), [h.in_flight for h in front.service.decode]
        # ... and every one has reached its decode engine (the Generate RPCs may still be in transit).
        in_engines = lambda: sum(w.engine.running + w.engine.waiting for w in _loads(front).values())  # noqa: E731
        assert front.wait_until(lambda: in_engines() >= CLIENTS, 30, interval=0.2), in_engines()
    finally:
        for conn in conns:
            conn.close()
    left = time.monotonic()
    busy = _busy(front)
    while busy and time.monotonic() - left < 2.0:
        time.sleep(0.1)
        busy = _busy(front)
    assert not busy, f"still running {time.monotonic() - left:.1f} s after the clients left: {busy}"
    assert front.metric("pdserve_requests_total", endpoint="completions", status="client_gone") == CLIENTS
