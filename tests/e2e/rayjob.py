"""``ray job submit -- pdserve up`` as the e2e tests drive it: submit (retrying while the node's job
agent registers), wait for the front end's ready file, stop the job and check that no process of ours
is left. ``RayCli`` runs the ``ray`` command of this venv with the cluster's environment (its auth token,
and whether several nodes may share the host)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.e2e.servers import ROOT

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class RayCli:
    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "ray"), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              check=False, env={**os.environ, **self.env})


def wait_dashboard(address: str, head: subprocess.Popen[bytes], deadline: float, log: Path) -> None:
    """Until the head's dashboard (the job API) answers; fails with the head's log if it dies or is late."""
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{address}/api/version", timeout=2).status_code in (200, 401):
                return
        assert head.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
        time.sleep(1)


def submit_and_wait(ray: RayCli, address: str, job_id: str, runtime_env: dict[str, Any], entry: list[str],
                    ready: Path, submit_deadline: float, ready_timeout_s: float) -> str:
    """Submit ``entry`` as job ``job_id`` and return the URL ``pdserve up`` writes to ``ready``; fails the
    test with the job's logs if it fails or is not ready in time."""
    while True:  # the dashboard answers before the node's job agent has registered
        submitted = ray("job", "submit", "--address", address, "--no-wait", "--submission-id", job_id,
                        "--runtime-env-json", json.dumps(runtime_env), "--", *entry)
        if submitted.returncode == 0 or "No available agent" not in submitted.stderr:
            break
        assert time.monotonic() < submit_deadline, submitted.stderr[-2000:]
        time.sleep(3)
    assert submitted.returncode == 0, submitted.stderr[-4000:]
    deadline = time.monotonic() + ready_timeout_s
    while not ready.exists():
        status = ray("job", "status", "--address", address, job_id).stdout
        assert "FAILED" not in status and time.monotonic() < deadline, ray(
            "job", "logs", "--address", address, job_id).stdout[-4000:]
        time.sleep(2)
    return ready.read_text().strip()


def our_processes(marker: str) -> set[int]:
    """pdserve processes whose command line carries this test's marker, and all their descendants."""
    roots = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if marker in " ".join(proc.info["cmdline"] or []):
                roots.append(proc)
    pids = set()
    for proc in roots:
        with contextlib.suppress(psutil.Error):
            pids.add(proc.pid)
            pids.update(child.pid for child in proc.children(recursive=True))
    return pids


def alive(pids: set[int]) -> set[int]:
    found = set()
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                found.add(pid)
    return found


def stop_leaves_nothing(ray: RayCli, address: str, job_id: str, ours: set[int]) -> None:
    """``ray job stop`` the job; every one of ``ours`` must be gone within 90 s."""
    stopped = ray("job", "stop", "--address", address, job_id, timeout=180)
    assert stopped.returncode == 0, stopped.stderr
    deadline = time.monotonic() + 90
    while alive(ours) and time.monotonic() < deadline:
        time.sleep(1)
    assert not alive(ours), f"left behind: {sorted(alive(ours))}"
