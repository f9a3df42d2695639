"""LocalLauncher with real worker processes (sim engines): ready endpoints answer over gRPC, stop leaves no
process behind, and a worker that cannot start fails the launch with its log's tail."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from conftest import StartWorkers
from pd_harness import LoopThread, sim_config

from orchestrator.config import ConfigError
from orchestrator.launch.launchers import LocalLauncher
from orchestrator.launch.plan import plan_processes
from orchestrator.launch.process import BIND_RETRIES, WorkerBindError, WorkerProcess, WorkerStartError
from orchestrator.pools.client import WorkerClient
from protocol.launch import READY_PREFIX, WorkerLaunchSpec, WorkerReady
from protocol.sim_profile import PROFILE_DIR

pytestmark = pytest.mark.timeout(60)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_workers_start_answer_and_stop(tiny_model_dir: Path, harness_loop: LoopThread,
                                       start_workers: StartWorkers) -> None:
    config = sim_config(tiny_model_dir, prefill=3, decode=1, engine_args={"num_blocks": 128})
    launcher, endpoints = start_workers(config)
    assert [(e.worker_id, e.role) for e in endpoints] == [
        ("prefill-0", "prefill"), ("prefill-1", "prefill"), ("prefill-2", "prefill"), ("decode-0", "decode")]
    assert len({e.pid for e in endpoints}) == 2  # sim workers of a pool share one process
    assert len({e.address for e in endpoints}) == 4 and all(e.address.startswith("127.0.0.1:") for e in endpoints)

    async def describe() -> list[tuple[str, str, int]]:
        out = []
        for e in endpoints:
            client = WorkerClient(e.worker_id, e.address)
            info = await client.info(timeout_s=10)
            await client.close()
            out.append((info.worker_id, info.role, info.engine.num_blocks))
        return out

    assert harness_loop.run(describe()) == [("prefill-0", "prefill", 128), ("prefill-1", "prefill", 128),
                                            ("prefill-2", "prefill", 128), ("decode-0", "decode", 128)]
    launcher.stop()
    assert not any(alive(e.pid) for e in endpoints)
    launcher.stop()  # idempotent


def test_a_worker_that_cannot_start_fails_the_launch(tiny_model_dir: Path, worker_logs: Path,
                                                     tmp_path: Path) -> None:
    # A bad engine arg no longer reaches a worker (the config fails to load), so take away the sim
    # profile file the config named after the config was validated.
    profile = tmp_path / "vanishing-profile.yaml"
    profile.write_text((PROFILE_DIR / "tiny-fast.yaml").read_text())
    config = sim_config(tiny_model_dir, prefill=1, decode=1, engine_args={"profile": str(profile)})
    profile.unlink()
    launcher = LocalLauncher()
    with pytest.raises(WorkerStartError) as info:
        launcher.start(plan_processes(config, run_id="bad"), timeout_s=30)
    assert "vanishing-profile.yaml: not found" in str(info.value)  # the worker's own error, from its log
    launcher.stop()


def test_a_bad_engine_arg_fails_the_config_not_a_worker(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"engine.args.no_such_field: Extra inputs are not permitted"):
        sim_config(tiny_model_dir, prefill=1, decode=1, engine_args={"no_such_field": 1})



class ScriptedProcess(WorkerProcess):
    """A worker process for ``specs`` whose n-th spawn runs ``scripts[n]`` (Python source, the last one
    repeated) instead of the worker."""

    def __init__(self, specs: tuple[WorkerLaunchSpec, ...], scripts: list[str], log_dir: Path) -> None:
        super().__init__("scripted", specs, log_dir=str(log_dir))
        self.scripts = scripts
        self.spawned = 0

    def command(self) -> list[str]:
        self.spawned += 1
        return [sys.executable, "-c", self.scripts[min(self.spawned, len(self.scripts)) - 1]]


# What vLLM prints when the port of its NIXL side channel was taken: the thread dies, the process waits on.
NEVER_READY_SCRIPT = (
    "import time\nprint('Exception in thread nixl_handshake_listener:')\n"
    "print(\"zmq.error.ZMQError: Address already in use (addr='tcp://127.0.0.1:35829')\", flush=True)\n"
    "time.sleep(60)\n")


def one_worker(tiny_model_dir: Path) -> tuple[WorkerLaunchSpec, ...]:
    return plan_processes(sim_config(tiny_model_dir, prefill=1, decode=1), run_id="scripted")[0].workers[:1]


def test_a_worker_whose_bind_failed_is_spawned_again_at_once(tiny_model_dir: Path, tmp_path: Path) -> None:
    specs = one_worker(tiny_model_dir)
    ready = WorkerReady(worker_id=specs[0].worker_id, address="127.0.0.1:1", node="127.0.0.1", pid=1)
    proc = ScriptedProcess(specs, [NEVER_READY_SCRIPT, f"import time\nprint({READY_PREFIX + ready.model_dump_json()!r}"
                                                       ", flush=True)\ntime.sleep(60)\n"], tmp_path)
    started = time.monotonic()
    try:
        (endpoint,) = proc.start(timeout_s=30)
    finally:
        proc.stop(grace_s=1)
    assert endpoint.address == "127.0.0.1:1" and proc.spawned == 2
    assert time.monotonic() - started < 15  # the first spawn was given up on sight, not after 30 s


def test_a_bind_that_keeps_failing_fails_the_start_within_its_timeout(tiny_model_dir: Path, tmp_path: Path) -> None:
    proc = ScriptedProcess(one_worker(tiny_model_dir), [NEVER_READY_SCRIPT], tmp_path)
    started = time.monotonic()
    with pytest.raises(WorkerBindError, match="Address already in use"):
        proc.start(timeout_s=30)
    assert proc.spawned == 1 + BIND_RETRIES and time.monotonic() - started < 25
    assert not proc.alive()
