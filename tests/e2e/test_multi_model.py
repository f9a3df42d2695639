"""One ``pdserve up`` serving two real models side by side on vLLM CPU (configs/multi-model-cpu.yaml):
SmolLM2-135M-Instruct and the tiny test model, each with its own prefill and decode worker (four engines,
the local launcher). Both answer through the openai client, /v1/models lists both, each answer's
workers belong to its model's pools, and a prompt sent to both models shares no cache: both models use
the same tokenizer, so the prompt's token ids (and blocks) are the same on both sides."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from orchestrator.model_prep import prepare_smollm2
from tests.e2e.promtext import sample
from tests.e2e.servers import Server, start_pdserve

pytestmark = pytest.mark.e2e

SMOL, TINY = "SmolLM2-135M-Instruct", "tiny-llama"
KEYS = {SMOL: "smollm2", TINY: "tiny"}
LONG_PROMPT = "A long shared document about the lighthouses of the northern coast and their keepers. " * 30


@pytest.fixture(scope="module")
def server(tiny_model: Path) -> Iterator[Server]:
    smol = prepare_smollm2()
    started = start_pdserve("configs/multi-model-cpu.yaml",
                            [f"models.0.model.path={smol}", f"models.1.model.path={tiny_model}"], launcher="local")
    try:
        yield started
    finally:
        started.stop()


def client(server: Server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def cached(server: Server, model: str) -> int:
    raw = client(server).completions.with_raw_response.create(model=model, prompt=LONG_PROMPT, max_tokens=2,
                                                              temperature=0)
    reply = raw.parse()
    assert raw.headers["x-prefill-worker"].startswith(KEYS[model] + ".")
    assert reply.usage is not None and reply.usage.prompt_tokens > 400
    details = reply.usage.prompt_tokens_details
    return (details.cached_tokens or 0) if details is not None else 0


def test_models_lists_both_with_their_context(server: Server) -> None:
    listed = {m.id: (m.model_extra or {}).get("max_model_len") for m in client(server).models.list().data}
    assert listed == {SMOL: 4096, TINY: 2048}


@pytest.mark.parametrize("model", [SMOL, TINY])
def test_each_model_answers_on_its_own_pools(server: Server, model: str) -> None:
    raw = client(server).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=12,
        temperature=0)
    answer = raw.parse()
    assert answer.model == model and answer.choices[0].message.content
    assert raw.headers["x-prefill-worker"] == f"{KEYS[model]}.prefill-0"
    assert raw.headers["x-decode-worker"] == f"{KEYS[model]}.decode-0"
    if model == SMOL:  # the real chat model knows it (the tiny one is random weights)
        assert "Paris" in answer.choices[0].message.content


def test_streams_name_their_model(server: Server) -> None:
    stream = client(server).chat.completions.create(
        model=TINY, messages=[{"role": "user", "content": "Count to five."}], max_tokens=6, temperature=0,
        stream=True)
    chunks = list(stream)
    assert chunks and {c.model for c in chunks} == {TINY}


def test_a_prompt_sent_to_both_models_shares_no_cache(server: Server) -> None:
    assert cached(server, TINY) == 0  # first time anywhere
    assert cached(server, TINY) > 0  # tiny hits its own cache
    assert cached(server, SMOL) == 0  # same token ids, the other model: a miss
    assert cached(server, SMOL) > 0
    for model in (SMOL, TINY):  # each model's requests are counted under its name
        assert sample(server.url, "pdserve_requests_total", model=model, endpoint="completions", status="200") >= 2
    health = httpx.get(f"{server.url}/health", timeout=10).json()
    assert health["status"] == "ok" and set(health["models"]) == {SMOL, TINY}
