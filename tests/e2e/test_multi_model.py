"""One ``pdserve up`` serving two real models side by side on vLLM CPU (configs/multi-model-cpu.yaml):
SmolLM2-135M-Instruct and the tiny test model, each with its own prefill and decode worker (four engines,
the local launcher), the tiny model's workers also serving a LoRA adapter. Both models answer through the
openai client, /v1/models lists both and the adapter, each answer's workers belong to its model's pools,
and a prompt sent to both models shares no cache: both models use the same tokenizer, so the prompt's
token ids (and blocks) are the same on both sides. The adapter, disaggregated (its prefill and its
decode both run it, the KV moved over NIXL), answers token for token as a single vLLM instance serving
the same adapter does, and shares no cache with its base model."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from orchestrator.model_prep import prepare_smollm2, prepare_tiny_lora
from tests.e2e.conftest import TINY_ENGINE
from tests.e2e.promtext import sample
from tests.e2e.servers import Server, start_pdserve, start_vllm_server
from transfer.ports import free_ports

pytestmark = pytest.mark.e2e

SMOL, TINY, PIRATE = "SmolLM2-135M-Instruct", "tiny-llama", "tiny-pirate"
KEYS = {SMOL: "smollm2", TINY: "tiny", PIRATE: "tiny"}
LONG_PROMPT = "A long shared document about the lighthouses of the northern coast and their keepers. " * 30


@pytest.fixture(scope="module")
def server(tiny_model: Path) -> Iterator[Server]:
    smol = prepare_smollm2()
    started = start_pdserve("configs/multi-model-cpu.yaml",
                            [f"models.0.model.path={smol}", f"models.1.model.path={tiny_model}",
                             f"models.1.model.adapters.0.path={prepare_tiny_lora()}"], launcher="local")
    try:
        yield started
    finally:
        started.stop()


def client(server: Server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def cached(server: Server, model: str, prompt: str = LONG_PROMPT) -> int:
    raw = client(server).completions.with_raw_response.create(model=model, prompt=prompt, max_tokens=2,
                                                              temperature=0)
    reply = raw.parse()
    assert raw.headers["x-prefill-worker"].startswith(KEYS[model] + ".")
    assert reply.usage is not None and reply.usage.prompt_tokens > 400
    details = reply.usage.prompt_tokens_details
    return (details.cached_tokens or 0) if details is not None else 0


@pytest.fixture(scope="module")
def lora_reference(tiny_model: Path) -> Iterator[Server]:
    """A plain vLLM serving the tiny model with the same adapter (the bar for the adapter's tokens)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # else vLLM CPU reserves 92% of the host's memory
    started = start_vllm_server(str(tiny_model), free_ports(1)[0],
                                [*TINY_ENGINE, "--served-model-name", TINY, "--enable-lora", "--max-lora-rank", "8",
                                 "--lora-modules", f"{PIRATE}={prepare_tiny_lora()}"])
    try:
        yield started
    finally:
        started.stop()


def test_models_lists_both_and_the_adapter_with_their_context(server: Server) -> None:
    listed = {m.id: ((m.model_extra or {}).get("max_model_len"), (m.model_extra or {}).get("parent"))
              for m in client(server).models.list().data}
    assert listed == {SMOL: (4096, None), TINY: (2048, None), PIRATE: (2048, TINY)}


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


def test_the_adapter_answers_as_plain_vllm_does_and_keeps_its_own_cache(server: Server,
                                                                      lora_reference: Server) -> None:
    prompts = ["Once upon a time", "The adapter and the base model", LONG_PROMPT[:300]]
    ours, theirs, base = [], [], []
    for prompt in prompts:
        raw = client(server).completions.with_raw_response.create(model=PIRATE, prompt=prompt, max_tokens=16,
                                                                  temperature=0, extra_body={"return_token_ids": True})
        assert raw.headers["x-prefill-worker"] == "tiny.prefill-0"  # disaggregated: the KV came over NIXL
        reply = raw.parse()
        assert reply.model == PIRATE
        ours.append(reply.choices[0].text)
        theirs.append(client(lora_reference).completions.create(model=PIRATE, prompt=prompt, max_tokens=16,
                                                                temperature=0).choices[0].text)
        base.append(client(server).completions.create(model=TINY, prompt=prompt, max_tokens=16,
                                                      temperature=0).choices[0].text)
    assert ours == theirs
    assert ours != base  # the adapter changes the answers: it was applied
    fresh = "An adapter's cache is its own. " + LONG_PROMPT
    assert cached(server, TINY, fresh) == 0 and cached(server, TINY, fresh) > 0
    assert cached(server, PIRATE, fresh) == 0  # the base model's blocks of the same tokens are not the adapter's
    assert cached(server, PIRATE, fresh) > 0
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert "tiny-pirate" not in text  # metrics count under the model serving it, not one series per adapter
