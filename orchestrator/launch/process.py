"""One worker process: start ``python -m worker``, wait for its ready lines, stop it (and its children).

The process runs in its own session, so ``stop`` can end the whole group (vLLM's engine core and
model workers included) with SIGTERM, then SIGKILL after a grace period. Its output goes to a log
file; ``start`` raises ``WorkerStartError`` with the log's tail if it dies or times out first.

Some failures leave the process alive but never ready: vLLM waits forever for a NIXL side channel it
could not bind (its listener thread dies with "Address already in use"). ``wait_ready`` reads those
in the log (``NEVER_READY``) and fails at once with ``WorkerBindError``; ``start`` then spawns the
process again, which picks new ports, up to ``BIND_RETRIES`` times.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from protocol.launch import READY_PREFIX, WorkerLaunchSpec, WorkerReady


class WorkerStartError(RuntimeError):
    """A worker process exited or did not become ready in time."""


class WorkerBindError(WorkerStartError):
    """A worker process could not bind a port it chose; another spawn picks new ones."""


# Log lines after which a live worker process never becomes ready (its bind failed in a thread).
NEVER_READY = ("Exception in thread nixl_handshake_listener",)
BIND_RETRIES = 2


def never_ready_line(log_text: str) -> str | None:
    """The first line of ``log_text`` that says the worker will never be ready, or None (pure)."""
    return next((line for line in log_text.splitlines() if any(m in line for m in NEVER_READY)), None)


@dataclass(frozen=True)
class WorkerEndpoint:
    """Where a started worker listens: its gRPC ``address``, its ``node``'s address, its NIXL side
    channel (``host:port``, None for the sim engine), and the process hosting it (``process``: the plan's
    name, ``pid``)."""

    worker_id: str
    role: str
    address: str
    pid: int
    node: str = "127.0.0.1"
    side_channel: str | None = None
    process: str = ""


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


class WorkerProcess:
    """Owns one OS process. Not thread-safe; one owner (an actor or a launcher)."""

    def __init__(self, name: str, specs: tuple[WorkerLaunchSpec, ...], log_dir: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.specs = specs
        self._env = dict(env or {})  # laid over this process's environment for the child
        self._log_dir = Path(log_dir or os.environ.get("PDSERVE_LOG_DIR", tempfile.gettempdir()))
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._spawns = 0
        self.log_path = self._next_log()
        self._proc: subprocess.Popen[bytes] | None = None

    def _next_log(self) -> Path:
        """A fresh log file per spawn, so a restart never reads its predecessor's ready lines (and the
        dead process's log is kept)."""
        self._spawns += 1
        return self._log_dir / f"pdserve-{self.name}-{os.getpid()}-{int(time.time())}-{self._spawns}.log"

    def start(self, timeout_s: float) -> list[WorkerEndpoint]:
        """``spawn`` then ``wait_ready``; a spawn whose bind failed is stopped and spawned again (new
        ports) up to ``BIND_RETRIES`` times, all within ``timeout_s``. Raises ``WorkerStartError``."""
        deadline = time.monotonic() + timeout_s
        for retries_left in range(BIND_RETRIES, -1, -1):
            self.spawn()
            try:
                return self.wait_ready(max(deadline - time.monotonic(), 1.0))
            except WorkerBindError:
                self.stop(grace_s=5.0)
                if retries_left == 0:
                    raise
        raise AssertionError("unreachable")

    def command(self) -> list[str]:
        """The child's argv: the worker module with one ``--spec`` per worker it hosts."""
        args = [sys.executable, "-m", "worker"]
        for spec in self.specs:
            args += ["--spec", spec.to_json()]
        return args

    def restart(self, timeout_s: float) -> list[WorkerEndpoint]:
        """Stop what is left of the process (its group), then start it again: same specs, new ports."""
        self.stop(grace_s=5.0)
        return self.start(timeout_s)

    def spawn(self) -> None:
        """Start the process. Call from a long-lived thread: the child's parent-death signal fires when
        the *thread* that forked it exits (Linux ``PR_SET_PDEATHSIG`` semantics)."""
        args = self.command()
        if self.log_path.exists():
            self.log_path = self._next_log()
        env = {**os.environ, **self._env}
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
                text = self.log_path.read_text(errors="replace")
                if (failure := never_ready_line(text)) is not None:
                    raise WorkerBindError(f"{self.name} will never be ready ({failure.strip()}):\n"
                                          f"{_tail(self.log_path)}")
                for line in text.splitlines():
                    if line.startswith(READY_PREFIX):
                        info = WorkerReady.model_validate_json(line[len(READY_PREFIX):])
                        ready[info.worker_id] = WorkerEndpoint(
                            worker_id=info.worker_id, role=roles[info.worker_id], address=info.address,
                            pid=info.pid, node=info.node, side_channel=info.side_channel, process=self.name)
            time.sleep(0.2)
        return [ready[s.worker_id] for s in self.specs]

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
