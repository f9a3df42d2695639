"""Session fixtures: the tiny model, a disaggregated pdserve on Ray (2 prefill + 1 decode real vLLM
CPU workers), and one plain vLLM instance of the same model as the reference."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.model_prep import prepare_tiny
from tests.e2e.servers import Server, start_pdserve, start_vllm_server
from transfer.ports import free_ports

pytestmark = pytest.mark.e2e

TINY_ENGINE = ["--dtype", "float32", "--enforce-eager", "--block-size", "32", "--max-model-len", "2048",
               "--max-num-seqs", "16"]


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return prepare_tiny()


@pytest.fixture(scope="session")
def pd_server(tiny_model: Path) -> Iterator[Server]:
    server = start_pdserve("configs/tiny-cpu.yaml", ["prefill.replicas=2", f"model.path={tiny_model}"])
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def reference_server(tiny_model: Path) -> Iterator[Server]:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    server = start_vllm_server(str(tiny_model), free_ports(1)[0],
                               [*TINY_ENGINE, "--served-model-name", "tiny-llama"])
    try:
        yield server
    finally:
        server.stop()


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the Ray-job tests first: they start their own clusters with SmolLM2 workers, and Ray's memory
    monitor kills actors when the host passes 95% memory, which the session's shared engines (tiny
    pd_server + reference vLLM) would push it towards if they were already up. The multi-model test
    (four engines of its own) comes next, for the same reason."""
    first = [item for item in items if "test_ray_job_default_model" in item.nodeid]
    first += [item for item in items if "test_two_node_ray" in item.nodeid]
    first += [item for item in items if "test_multi_model" in item.nodeid]  # four engines of its own
    items[:] = first + [item for item in items if item not in first]
