"""Local or remote prefill against simulated workers (1 prefill + 2 decode sim engines in child processes,
the real Service and front end), priced with the cache each path would use: a prompt one decode worker
holds is prefilled there, locally, and a prompt only the prefill worker holds is prefilled there, remotely,
never recomputed on a decode worker. Each worker's cache is warmed by calling it directly over gRPC; its
KV events reach the front end's prefix index (decode workers' too)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import StartWorkers
from pd_harness import MODEL_NAME, SIM_VOCAB, FrontEnd, LoopThread, sim_config

from orchestrator.api.text import Tokenizer
from orchestrator.pools.client import WorkerClient
from orchestrator.scheduler.disagg_policy import DisaggPolicy
from protocol.types import GenerateCall, PrefillCall, SamplingSpec

pytestmark = pytest.mark.timeout(90)

MIN_REMOTE = 64
BLOCK = 4  # the tiny-fast profile's block size


@pytest.fixture(scope="module")
def fleet(tiny_model_dir: Path, tokenizer: Tokenizer, harness_loop: LoopThread,
          start_workers: StartWorkers) -> Iterator[tuple[FrontEnd, dict[str, str]]]:
    config = sim_config(tiny_model_dir, prefill=1, decode=2)
    config = config.model_copy(update={"disaggregation": DisaggPolicy(min_remote_tokens=MIN_REMOTE)})
    _, endpoints = start_workers(config)
    front = FrontEnd.start(harness_loop, config, endpoints, tokenizer)
    yield front, {e.worker_id: e.address for e in endpoints}
    front.stop()


def prompt(seed: int, n: int = 160) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1000, SIM_VOCAB) for _ in range(n)]


def warm(front: FrontEnd, worker_id: str, address: str, tokens: list[int]) -> None:
    """Run ``tokens`` on one worker directly, so its prefix cache (and, through its KV events, the
    index) holds them: a local Generate on a decode worker, a Prefill (its handoff then freed) on a
    prefill worker."""
    async def run() -> None:
        client = WorkerClient(worker_id, address)
        try:
            if worker_id.startswith("decode"):
                call = GenerateCall(request_id=f"warm-{worker_id}", prompt_token_ids=tuple(tokens),
                                    sampling=SamplingSpec(max_tokens=1))
                async for _ in client.generate(call, 30.0, 30.0):
                    pass
            else:
                pcall = PrefillCall(request_id=f"warm-{worker_id}", prompt_token_ids=tuple(tokens),
                                    sampling=SamplingSpec(max_tokens=1))
                await client.prefill(pcall, 30.0)
                await client.abort(pcall.request_id)
        finally:
            await client.close()

    front.loop.run(run())
    full_blocks = len(tokens) // BLOCK

    def indexed() -> bool:
        async def match() -> dict[str, int]:
            router = front.service.router
            return router.match(router.make_request(tokens))
        return front.loop.run(match()).get(worker_id, 0) == full_blocks

    assert front.wait_until(indexed, 10), f"{worker_id}'s KV events never reached the index"


def complete(front: FrontEnd, tokens: list[int]) -> httpx.Response:
    reply = httpx.post(f"{front.url}/v1/completions", timeout=30,
                       json={"model": MODEL_NAME, "prompt": tokens, "max_tokens": 3})
    assert reply.status_code == 200, reply.text
    return reply


def test_a_prompt_cached_on_a_decode_worker_is_prefilled_locally_there(
        fleet: tuple[FrontEnd, dict[str, str]]) -> None:
    front, addresses = fleet
    holder = sorted(w for w in addresses if w.startswith("decode"))[-1]  # not the first: no accidental tie win
    tokens = prompt(1)
    warm(front, holder, addresses[holder], tokens)
    reply = complete(front, tokens)
    assert (reply.headers["x-route-reason"], reply.headers["x-prefill-worker"],
            reply.headers["x-decode-worker"]) == ("short_prompt", "none", holder)
    # The decode worker's own cache served the prompt: every full block before the last token was a hit.
    assert reply.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == (len(tokens) - 1) // BLOCK * BLOCK


def test_a_prompt_cached_on_the_prefill_worker_is_not_recomputed_on_a_decode_worker(
        fleet: tuple[FrontEnd, dict[str, str]]) -> None:
    front, addresses = fleet
    prefill = next(w for w in addresses if w.startswith("prefill"))
    tokens = prompt(2)
    warm(front, prefill, addresses[prefill], tokens)  # 0 uncached tokens there, 160 on either decode worker
    reply = complete(front, tokens)
    assert reply.headers["x-prefill-worker"] == prefill
    assert reply.headers["x-route-reason"] != "short_prompt"
    assert reply.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == (len(tokens) - 1) // BLOCK * BLOCK
