"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis), against the
front end over simulated workers: whatever the body, the server answers no 5xx, only status codes and
content types the document lists, and bodies that match its schemas (errors in the OpenAI shape).
Bounded example counts keep it to seconds. Half of the generated chat and completion bodies name the
served model, so that they get past the model check into templating, tokenization and decoding."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from conftest import StartWorkers
from hypothesis import HealthCheck, given, settings
from pd_harness import MODEL_NAME, FrontEnd, LoopThread, sim_config
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

from orchestrator.api.text import Tokenizer
from orchestrator.config import LimitsConfig

pytestmark = pytest.mark.timeout(120)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_front(tiny_model_dir: Path, tokenizer: Tokenizer, harness_loop: LoopThread,
               start_workers: StartWorkers) -> Iterator[FrontEnd]:
    limits = LimitsConfig(default_max_tokens=8, max_body_bytes=256 * 1024)
    config = sim_config(tiny_model_dir, prefill=1, decode=1).model_copy(update={"limits": limits})
    _, endpoints = start_workers(config)
    front = FrontEnd.start(harness_loop, config, endpoints, tokenizer)
    yield front
    front.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_front: FrontEnd) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_front.url}/openapi.json")


VALID, INVALID = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
# GET routes take no input: only schema-valid (empty) requests exist for them.
OPERATIONS = [("POST", "/v1/chat/completions", VALID), ("POST", "/v1/chat/completions", INVALID),
              ("POST", "/v1/completions", VALID), ("POST", "/v1/completions", INVALID),
              ("GET", "/v1/models", VALID), ("GET", "/health", VALID), ("GET", "/metrics", VALID)]


@pytest.mark.parametrize("method, path, mode", OPERATIONS)
def test_api_answers_no_5xx_and_conforms_to_its_document(api_schema: Any, fuzz_front: FrontEnd, method: str,
                                                         path: str, mode: GenerationMode) -> None:
    """Schema-valid bodies (``valid``) and bodies that break the schema (``invalid``)."""
    operation = api_schema[path][method]
    examples = 50 if method == "POST" else 5

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(case: Any) -> None:
        if isinstance(case.body, dict) and "model" in case.body and len(repr(case.body)) % 2:
            case.body["model"] = MODEL_NAME  # past the model check, into templating and decoding
        case.call_and_validate(base_url=fuzz_front.url, checks=CHECKS, timeout=30)

    fuzz()

