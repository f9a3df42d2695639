"""Fixtures for the simulated-engine integration suite: the tiny tokenizer, an event loop thread for the
in-process front end, and simulated worker processes started with the real LocalLauncher."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pd_harness import LoopThread, StubFront

from orchestrator.api.text import Tokenizer
from orchestrator.config import PdserveConfig
from orchestrator.launch.launchers import LocalLauncher
from orchestrator.launch.plan import plan_processes
from orchestrator.launch.process import WorkerEndpoint

StartWorkers = Callable[[PdserveConfig], tuple[LocalLauncher, list[WorkerEndpoint]]]


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="session")
def harness_loop() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def worker_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Worker process logs go to a pytest temp folder, not /tmp."""
    folder = tmp_path_factory.mktemp("worker-logs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PDSERVE_LOG_DIR", str(folder))
        mp.setenv("PDSERVE_IPC_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def start_workers(worker_logs: Path) -> Iterator[StartWorkers]:
    """Start a config's simulated workers as child processes; every one is stopped at teardown."""
    launchers: list[LocalLauncher] = []

    def start(config: PdserveConfig) -> tuple[LocalLauncher, list[WorkerEndpoint]]:
        launcher = LocalLauncher()
        launchers.append(launcher)
        return launcher, launcher.start(plan_processes(config, run_id="itest"), timeout_s=60)

    yield start
    for launcher in launchers:
        launcher.stop()


@pytest.fixture
def stub_front(tiny_model_dir: Path, tokenizer: Tokenizer, harness_loop: LoopThread) -> Iterator[StubFront]:
    builder = StubFront(tiny_model_dir, tokenizer, harness_loop)
    yield builder
    builder.close()
