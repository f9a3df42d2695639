"""API keys, tenants and admission limits through the real front end over simulated workers (1 prefill +
1 decode, so both tenants' prompts meet the same prefix caches): 401 in OpenAI's shape, the official
client with a key, per-tenant cache isolation, per-key concurrency and rate limits (429 + Retry-After),
admin-only /metrics, and keys never showing up in metrics or logs."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from conftest import StartWorkers
from pd_harness import MODEL_NAME, FrontEnd, LoopThread, assert_error, metric_value, sim_config, sse_events

from orchestrator.api.text import Tokenizer
from orchestrator.config import AuthConfig

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
LONG_PROMPT = ("Tenants must never share a prefix cache, whatever their prompts have in common. " * 6).strip()


@dataclass
class Keys:
    file: Path
    acme: str  # tenant acme, no limits
    acme_one: str  # tenant acme, max_concurrency 1
    acme_rpm: str  # tenant acme, 2 requests per minute
    globex: str  # tenant globex (used only by the cache isolation test)
    admin: str  # tenant ops, admin

    def all(self) -> list[str]:
        return [self.acme, self.acme_one, self.acme_rpm, self.globex, self.admin]


def keys_add(file: Path, tenant: str, *flags: str) -> str:
    """``pdserve keys add``, run as a user would: the key is the only line on stdout."""
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "keys", "add", tenant, "--file", str(file),
                           *flags], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30)
    (key,) = done.stdout.split()
    return key


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    file = tmp_path_factory.mktemp("auth") / "keys.jsonl"
    made = Keys(file, keys_add(file, "acme"), keys_add(file, "acme", "--max-concurrency", "1"),
                keys_add(file, "acme", "--rpm", "2"), keys_add(file, "globex"), keys_add(file, "ops", "--admin"))
    text = file.read_text()
    assert len(text.splitlines()) == 5 and not any(k in text for k in made.all())
    return made


@pytest.fixture(scope="module")
def front(tiny_model_dir: Path, tokenizer: Tokenizer, harness_loop: LoopThread, start_workers: StartWorkers,
          keys: Keys) -> Iterator[FrontEnd]:
    # 10 ms decode steps, so a stream of a few hundred tokens stays in flight for seconds.
    config = sim_config(tiny_model_dir, prefill=1, decode=1, engine_args={"speedup": 1.0, "step_base_s": 0.01})
    config = config.model_copy(update={"auth": AuthConfig(keys_file=str(keys.file), protect_metrics=True)})
    _, endpoints = start_workers(config)
    front = FrontEnd.start(harness_loop, config, endpoints, tokenizer)
    yield front
    front.stop()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def completion(max_tokens: int = 2, **extra: object) -> dict[str, object]:
    return {"model": MODEL_NAME, "prompt": "hello there", "max_tokens": max_tokens, **extra}


@pytest.mark.parametrize("headers", [{}, bearer("pds-not-a-key"), {"Authorization": "Basic abc"}],
                         ids=["missing", "unknown", "not-bearer"])
def test_requests_without_a_valid_key_get_401_in_openai_shape(front: FrontEnd, headers: dict[str, str]) -> None:
    for method, path in (("POST", "/v1/completions"), ("POST", "/v1/chat/completions"), ("GET", "/v1/models")):
        reply = httpx.request(method, f"{front.url}{path}", json=completion(), headers=headers, timeout=10)
        error = assert_error(reply, 401, "invalid_api_key")
        assert error["type"] == "invalid_request_error" and error["param"] is None
        assert "pds-not-a-key" not in reply.text
        assert reply.headers["www-authenticate"] == "Bearer"


def test_the_openai_client_works_with_a_key_and_raises_on_a_bad_one(front: FrontEnd, keys: Keys) -> None:
    with openai.OpenAI(base_url=f"{front.url}/v1", api_key=keys.acme, max_retries=0, timeout=30) as client:
        reply = client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "Hi"}],
                                               max_tokens=3)
        assert reply.choices[0].message.content and [m.id for m in client.models.list().data] == [MODEL_NAME]
    with (openai.OpenAI(base_url=f"{front.url}/v1", api_key="pds-wrong", max_retries=0, timeout=30) as client,
          pytest.raises(openai.AuthenticationError) as info):
        client.completions.create(model=MODEL_NAME, prompt="hi", max_tokens=2)
    assert info.value.code == "invalid_api_key"


def cached_tokens(front: FrontEnd, key: str) -> int:
    reply = httpx.post(f"{front.url}/v1/chat/completions", headers=bearer(key), timeout=30, json={
        "model": MODEL_NAME, "messages": [{"role": "user", "content": LONG_PROMPT}], "max_tokens": 2})
    assert reply.status_code == 200, reply.text
    usage = reply.json()["usage"]
    assert usage["prompt_tokens"] > 100
    return int(usage["prompt_tokens_details"]["cached_tokens"])


def test_one_tenants_prompt_never_hits_another_tenants_cache(front: FrontEnd, keys: Keys) -> None:
    cached_tokens(front, keys.acme)
    assert cached_tokens(front, keys.acme) > 100  # the same tenant's repeat hits its cache
    assert cached_tokens(front, keys.acme_one) > 100  # another key of the same tenant shares it
    assert cached_tokens(front, keys.globex) == 0  # the other tenant does not, not even the chat template
    assert cached_tokens(front, keys.globex) > 100


def test_per_key_concurrency_limit_is_429_with_retry_after(front: FrontEnd, keys: Keys) -> None:
    body = completion(max_tokens=300, ignore_eos=True, stream=True)
    with httpx.stream("POST", f"{front.url}/v1/completions", json=body, headers=bearer(keys.acme_one),
                      timeout=30) as stream:
        assert stream.status_code == 200
        events = sse_events(stream.iter_lines())
        first = next(events)
        assert isinstance(first, dict)
        refused = httpx.post(f"{front.url}/v1/completions", json=completion(), headers=bearer(keys.acme_one),
                             timeout=10)
        error = assert_error(refused, 429, "rate_limit_exceeded")
        assert "concurrent" in error["message"] and int(refused.headers["retry-after"]) >= 1
        other = httpx.post(f"{front.url}/v1/completions", json=completion(), headers=bearer(keys.acme), timeout=10)
        assert other.status_code == 200  # the limit is the key's, not the tenant's or the server's
    # Closing the stream releases the key's slot.
    assert front.wait_until(lambda: httpx.post(f"{front.url}/v1/completions", json=completion(),
                                               headers=bearer(keys.acme_one), timeout=10).status_code == 200, 10)


def test_request_rate_limit_is_429_with_retry_after(front: FrontEnd, keys: Keys) -> None:
    for _ in range(2):
        ok = httpx.post(f"{front.url}/v1/completions", json=completion(), headers=bearer(keys.acme_rpm), timeout=10)
        assert ok.status_code == 200, ok.text
    with (openai.OpenAI(base_url=f"{front.url}/v1", api_key=keys.acme_rpm, max_retries=0, timeout=30) as client,
          pytest.raises(openai.RateLimitError) as info):
        client.completions.create(model=MODEL_NAME, prompt="hi", max_tokens=2)
    assert info.value.code == "rate_limit_exceeded"
    assert 1 <= int(info.value.response.headers["retry-after"]) <= 30
    text = httpx.get(f"{front.url}/metrics", headers=bearer(keys.admin), timeout=10).text
    assert metric_value(text, "pdserve_requests_refused_total", reason="key_rate", tenant="acme") >= 1


def test_metrics_need_an_admin_key_and_never_show_a_key(front: FrontEnd, keys: Keys) -> None:
    assert_error(httpx.get(f"{front.url}/metrics", timeout=10), 401, "invalid_api_key")
    assert_error(httpx.get(f"{front.url}/metrics", headers=bearer(keys.acme), timeout=10), 403,
                 "insufficient_permissions")
    reply = httpx.get(f"{front.url}/metrics", headers=bearer(keys.admin), timeout=10)
    assert reply.status_code == 200 and "pdserve_requests_total" in reply.text
    assert not any(key in reply.text for key in keys.all())
    assert httpx.get(f"{front.url}/health", timeout=10).status_code == 200  # open unless auth.protect_health


def test_keys_never_appear_in_logs(front: FrontEnd, keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for key in [*keys.all(), "pds-some-wrong-key"]:
        for _ in range(3):  # past the rate-limited key's budget too
            httpx.post(f"{front.url}/v1/completions", json=completion(), headers=bearer(key), timeout=10)
        httpx.get(f"{front.url}/metrics", headers=bearer(key), timeout=10)
    assert caplog.records  # something was logged at all
    assert not any(key in caplog.text for key in [*keys.all(), "pds-some-wrong-key"])
