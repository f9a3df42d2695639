"""One worker process: start ``python -m worker``, wait for its ready lines, stop it (and its children).

The process runs in its own session, so ``stop`` can end the whole group (vLLM's engine core and
model workers included) with SIGTERM, then SIGKILL after a grace period. Its output goes to a log
file; ``start`` raises ``WorkerStartError`` with the log's tail if it dies or times out first.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from protocol.launch import READY_PREFIX, WorkerLaunchSpec


class WorkerStartError(RuntimeError):
    """A worker process exited or did not become ready in time."""


@dataclass(frozen=True)
class WorkerEndpoint:
    """Where a started worker listens (gRPC) and which process hosts it."""

    worker_id: str
    role: str
    address: str
    pid: int


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


class WorkerProcess:
    """Owns one OS process. Not thread-safe; one owner (an actor or a launcher)."""

    def __init__(self, name: str, specs: tuple[WorkerLaunchSpec, ...], log_dir: str | None = None) -> None:
        self.name = name
        self.specs = specs
        directory = Path(log_dir or os.environ.get("PDSERVE_LOG_DIR", tempfile.gettempdir()))
        directory.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / f"pdserve-{name}-{os.getpid()}-{int(time.time())}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float) -> list[WorkerEndpoint]:
        """``spawn`` then ``wait_ready``."""
        self.spawn()
        return self.wait_ready(timeout_s)

    def spawn(self) -> None:
        """Start the process. Call from a long-lived thread: the child's parent-death signal fires when
        the *thread* that forked it exits (Linux ``PR_SET_PDEATHSIG`` semantics)."""
        args = [sys.executable, "-m", "worker"]
        for spec in self.specs:
            args += ["--spec", spec.to_json()]
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child keeps writing after we return
        self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True)
        log.close()

    def wait_ready(self, timeout_s: float) -> list[WorkerEndpoint]:
        """Block until every worker printed its ready line; raises ``WorkerStartError``."""
        if self._proc is None:
            raise WorkerStartError(f"{self.name} was not spawned")
        deadline = time.monotonic() + timeout_s
        ready: dict[str, WorkerEndpoint] = {}
        roles = {s.worker_id: s.role for s in self.specs}
        while len(ready) < len(self.specs):
            if self._proc.poll() is not None:
                raise WorkerStartError(f"{self.name} exited with {self._proc.returncode}:\n{_tail(self.log_path)}")
            if time.monotonic() > deadline:
                self.stop()
                raise WorkerStartError(f"{self.name} not ready after {timeout_s:.0f}s:\n{_tail(self.log_path)}")
            with contextlib.suppress(OSError):
                for line in self.log_path.read_text(errors="replace").splitlines():
                    if line.startswith(READY_PREFIX):
                        info = json.loads(line[len(READY_PREFIX):])
                        ready[info["worker_id"]] = WorkerEndpoint(
                            worker_id=info["worker_id"], role=roles[info["worker_id"]],
                            address=info["address"], pid=int(info["pid"]))
            time.sleep(0.2)
        return [ready[s.worker_id] for s in self.specs]

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the process group, wait up to ``grace_s``, then SIGKILL it. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
        # The leader may be gone while vLLM's children linger: sweep the whole group either way.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
