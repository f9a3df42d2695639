"""Two simulated models behind one front end (a ``models:`` config): each request runs on its own model's
pools, prompts never share a cache across models, metrics carry the model, and each model's pools scale,
fail and restart on their own while the other keeps serving. Traffic: loopback only, bounded."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pd_harness import SIM_VOCAB, FrontEnd, LoopThread, assert_error, metric_value, wait_for
from pd_harness import admin_workers as workers

from orchestrator.api.text import Tokenizer
from orchestrator.deployment import Deployment, parse_deployment
from orchestrator.launch.launchers import LocalLauncher
from orchestrator.launch.plan import plan_deployment

pytestmark = pytest.mark.timeout(120)

ALPHA, BETA = "sim-alpha", "sim-beta"
PROMPT = "Tell me about the lighthouse keepers of the northern coast and the storms they wrote down."


def two_models(model_dir: Path) -> Deployment:
    engine = {"kind": "sim", "args": {"profile": "tiny-fast", "vocab_size": SIM_VOCAB, "eos_token_id": 2,
                                      "num_blocks": 1024, "max_model_len": 1024, "speedup": 20.0}}
    pools = {"prefill": {"replicas": 1, "routing": {"profile": "kv_aware"}},
             "decode": {"replicas": 1, "routing": {"profile": "decode"}}}
    return parse_deployment({
        "apiVersion": "pdserve/v1",
        "models": [
            {"model": {"name": ALPHA, "path": str(model_dir)}, "engine": engine, **pools,
             "disaggregation": {"min_remote_tokens": 0}},
            # beta's max_model_len differs, so /v1/models shows each model's own facts.
            {"model": {"name": BETA, "path": str(model_dir), "key": "beta"},
             "engine": {**engine, "args": {**engine["args"], "max_model_len": 512}}, **pools,
             "disaggregation": {"min_remote_tokens": 0}},
        ],
        "server": {"host": "127.0.0.1", "port": 0, "load_poll_interval_s": 0.1},
    })


@pytest.fixture(scope="module")
def front(tiny_model_dir: Path, tokenizer: Tokenizer, harness_loop: LoopThread,
          worker_logs: Path) -> Iterator[FrontEnd]:
    deployment = two_models(tiny_model_dir)
    launcher = LocalLauncher()
    plans = plan_deployment(deployment, run_id="itest-models")
    try:
        served = FrontEnd.start(harness_loop, deployment, launcher.start(plans, timeout_s=60),
                                {ALPHA: tokenizer, BETA: tokenizer}, launcher=launcher, plans=plans)
        try:
            yield served
        finally:
            served.stop()
    finally:
        launcher.stop()


def ask(client: openai.OpenAI, model: str) -> tuple[Any, dict[str, str]]:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=4, temperature=0)
    return raw.parse(), dict(raw.headers)


def test_models_are_listed_with_their_own_context(front: FrontEnd) -> None:
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key="unused")
    listed = {m.id: m for m in client.models.list().data}
    assert set(listed) == {ALPHA, BETA}
    assert (listed[ALPHA].model_extra or {})["max_model_len"] == 1024
    assert (listed[BETA].model_extra or {})["max_model_len"] == 512


def test_each_request_runs_on_its_models_pools_and_caches_never_mix(front: FrontEnd) -> None:
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key="unused", max_retries=0)
    first, headers = ask(client, ALPHA)
    assert first.model == ALPHA
    assert headers["x-prefill-worker"] == "sim-alpha.prefill-0" and headers["x-decode-worker"] == "sim-alpha.decode-0"
    # alpha's second ask of the same prompt hits alpha's cache (the router saw alpha's KV events) ...
    wait_for(lambda: ask(client, ALPHA)[0].usage.prompt_tokens_details.cached_tokens > 0, 10, "alpha's cache hit")
    # ... while beta, asked the same prompt for the first time, has nothing cached, predicted or observed.
    second, headers = ask(client, BETA)
    assert second.model == BETA
    assert headers["x-prefill-worker"] == "beta.prefill-0" and headers["x-decode-worker"] == "beta.decode-0"
    assert second.usage.prompt_tokens_details.cached_tokens == 0
    text = httpx.get(f"{front.url}/metrics", timeout=10).text
    assert metric_value(text, "pdserve_cached_tokens_total", model=BETA, source="predicted") == 0
    assert metric_value(text, "pdserve_cached_tokens_total", model=ALPHA, source="predicted") > 0
    assert metric_value(text, "pdserve_requests_total", model=BETA, endpoint="chat_completions", status="200") == 1
    assert metric_value(text, "pdserve_requests_total", model=ALPHA, endpoint="chat_completions", status="200") >= 2


def test_an_unknown_model_is_a_404_and_counts_nowhere(front: FrontEnd) -> None:
    reply = httpx.post(f"{front.url}/v1/completions", json={"model": "sim", "prompt": "hi", "max_tokens": 2},
                       timeout=10)
    error = assert_error(reply, 404, "model_not_found")
    assert error["param"] == "model"


def test_scaling_names_the_model(front: FrontEnd) -> None:
    url = f"{front.url}/admin/pools/prefill/scale"
    assert_error(httpx.post(url, json={"replicas": 2}, timeout=10), 400)
    assert_error(httpx.post(url, json={"replicas": 2, "model": "nope"}, timeout=10), 404)
    order = httpx.post(url, json={"replicas": 2, "model": BETA}, timeout=10)
    assert order.status_code == 202 and order.json()["adding"] == ["beta.prefill-1"]
    wait_for(lambda: workers(front.url).get("beta.prefill-1", {}).get("state") == "healthy", 30, "beta.prefill-1")
    rows = workers(front.url)
    assert {w: r["model"] for w, r in rows.items() if r["pool"] == "prefill"} == {
        "sim-alpha.prefill-0": ALPHA, "beta.prefill-0": BETA, "beta.prefill-1": BETA}
    health = httpx.get(f"{front.url}/health", timeout=10).json()
    assert health["models"][BETA]["pools"]["prefill"] == {"healthy": 2, "total": 2}
    assert health["models"][ALPHA]["pools"]["prefill"] == {"healthy": 1, "total": 1}
    assert health["pools"]["prefill"] == {"healthy": 3, "total": 3}


def test_one_models_dead_worker_leaves_the_other_serving(front: FrontEnd) -> None:
    victim = workers(front.url)["sim-alpha.decode-0"]
    os.kill(victim["pid"], signal.SIGKILL)
    wait_for(lambda: workers(front.url)["sim-alpha.decode-0"]["state"] != "healthy", 10, "alpha's decode down")
    health = httpx.get(f"{front.url}/health", timeout=10)
    assert health.status_code == 200 and health.json()["models"][BETA]["status"] == "ok"
    assert health.json()["status"] in ("degraded", "ok")  # ok again if alpha came back already
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key="unused", max_retries=0, timeout=10)
    started = time.monotonic()
    answer, headers = ask(client, BETA)
    assert answer.choices[0].message.content is not None and headers["x-decode-worker"] == "beta.decode-0"
    assert time.monotonic() - started < 5
    # alpha's decode worker is restarted at a new process, and alpha serves again.
    wait_for(lambda: workers(front.url)["sim-alpha.decode-0"]["state"] == "healthy", 30, "alpha's decode back")
    assert workers(front.url)["sim-alpha.decode-0"]["pid"] != victim["pid"]
    assert ask(client, ALPHA)[1]["x-decode-worker"] == "sim-alpha.decode-0"
    text = httpx.get(f"{front.url}/metrics", timeout=10).text
    assert metric_value(text, "pdserve_worker_restarts_total", model=ALPHA, worker="sim-alpha.decode-0") == 1
