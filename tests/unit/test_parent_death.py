"""A vLLM child of a pdserve worker dies with the worker (``transfer.parent_death``), shown with plain
processes standing in for the worker and its engine core (``multiprocessing``'s spawn, as vLLM uses)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from transfer import parent_death

ROOT = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent("""
    import multiprocessing, os, sys, time
    from transfer import parent_death

    def engine_core() -> None:
        parent_death.install()  # what vLLM's plugin loader runs in the engine core
        time.sleep(60)

    if __name__ == "__main__":
        if sys.argv[1] == "named":
            os.environ[parent_death.ENV] = str(os.getpid())
        child = multiprocessing.get_context("spawn").Process(target=engine_core)
        child.start()
        time.sleep(1.0)  # the child has loaded the plugin
        print(child.pid, flush=True)
        time.sleep(60)
""")


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def _start(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], int]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(parent_death.ENV, None)
    proc = subprocess.Popen([sys.executable, str(script), mode], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_engine_child_dies_with_a_killed_worker(tmp_path: Path) -> None:
    proc, child = _start(tmp_path, "named")
    try:
        proc.kill()  # SIGKILL: the worker runs no cleanup of its own
        proc.wait(10)
        deadline = time.monotonic() + 10
        while not _gone(child):
            assert time.monotonic() < deadline, f"engine child {child} outlived its killed worker"
            time.sleep(0.05)
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_without_the_variable_the_child_outlives_its_parent(tmp_path: Path) -> None:
    """The control: what vLLM does by itself, and what a plain ``vllm serve`` keeps."""
    proc, child = _start(tmp_path, "unnamed")
    try:
        proc.kill()
        proc.wait(10)
        time.sleep(1.5)
        assert not _gone(child)
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)


def test_the_worker_itself_and_unnamed_processes_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(parent_death, "die_with_parent", calls.append)
    monkeypatch.setenv(parent_death.ENV, str(os.getpid()))
    parent_death.install()
    monkeypatch.delenv(parent_death.ENV)
    parent_death.install()
    monkeypatch.setenv(parent_death.ENV, str(os.getppid()))  # this process is that one's direct child
    parent_death.install()
    assert calls == [signal.SIGKILL]
