"""KV-aware routing on real vLLM CPU workers (2 prefill, 1 decode): a repeated long prefix lands on
the prefill worker that holds it, the engine's cached-token count confirms the hit, and the router's
predicted hit ratio agrees with the engines' observed one within 2%."""

from __future__ import annotations

import random
import time

import httpx
import pytest

from tests.e2e.promtext import sample
from tests.e2e.servers import Server

pytestmark = pytest.mark.e2e


def _ask(url: str, prompt: list[int]) -> httpx.Response:
    reply = httpx.post(f"{url}/v1/completions", timeout=120, json={
        "model": "tiny-llama", "prompt": prompt, "max_tokens": 2, "temperature": 0})
    assert reply.status_code == 200, reply.text
    return reply


def test_prefix_lands_where_cached_and_prediction_matches_engine(pd_server: Server) -> None:
    url = pd_server.url
    rng = random.Random(11)
    families = [[rng.randrange(300, 40000) for _ in range(600)] for _ in range(3)]
    predicted0 = sample(url, "pdserve_cached_tokens_total", source="predicted")
    observed0 = sample(url, "pdserve_cached_tokens_total", source="observed")
    prompt0 = sample(url, "pdserve_tokens_total", kind="prompt")
    homes: dict[int, set[str]] = {}
    for turn in range(4):
        for fam, prefix in enumerate(families):
            prompt = prefix + [rng.randrange(300, 40000) for _ in range(40 + 10 * turn)]
            reply = _ask(url, prompt)
            worker = reply.headers["x-prefill-worker"]
            cached = reply.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
            if turn > 0:
                # The prefix (600 tokens = 18 full blocks of 32) was cached on the worker it went to.
                assert worker in homes[fam], (fam, worker, homes[fam])
                assert cached >= 18 * 32
            homes.setdefault(fam, set()).add(worker)
            time.sleep(0.3)  # let the worker's KV events reach the index
    prompt_tokens = sample(url, "pdserve_tokens_total", kind="prompt") - prompt0
    predicted = (sample(url, "pdserve_cached_tokens_total", source="predicted") - predicted0) / prompt_tokens
    observed = (sample(url, "pdserve_cached_tokens_total", source="observed") - observed0) / prompt_tokens
    assert observed > 0.5
    assert abs(predicted - observed) <= 0.02, (predicted, observed)
