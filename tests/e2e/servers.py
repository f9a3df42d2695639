"""Start and stop the real servers the e2e tests drive: ``pdserve up`` and a plain vLLM OpenAI server.

Each runs in its own process session; teardown stops exactly that session (SIGINT, then SIGTERM, then
SIGKILL of its process group). Everything binds 127.0.0.1.
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

import httpx

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_tail(self, lines: int = 60) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, grace_s: float = 60.0) -> None:
        for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=wait)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _log_file(name: str) -> Path:
    directory = Path(os.environ.get("PDSERVE_TEST_LOG_DIR", tempfile.gettempdir()))
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{name}-{os.getpid()}-{int(time.time())}.log"


def start_pdserve(config: str, overrides: list[str], launcher: str = "ray", timeout_s: float = 900,
                  extra_env: dict[str, str] | None = None) -> Server:
    ready = Path(tempfile.mkdtemp(prefix="pdserve-ready-")) / "url"
    log_path = _log_file("pdserve-up")
    args = [sys.executable, "-m", "orchestrator.cli", "up", "--config", str(ROOT / config),
            "--launcher", launcher, "--ready-file", str(ready)]
    for item in overrides:
        args += ["--set", item]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    server = Server(proc, "", log_path)
    deadline = time.monotonic() + timeout_s
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"pdserve up did not become ready:\n{server.log_tail()}")
        time.sleep(0.5)
    server.url = ready.read_text().strip()
    return server


def start_vllm_server(model: str, port: int, args: list[str], timeout_s: float = 600) -> Server:
    """A plain single-instance vLLM OpenAI server (the reference for token equality)."""
    log_path = _log_file("vllm-reference")
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
           "--host", "127.0.0.1", "--port", str(port), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "VLLM_HOST_IP": "127.0.0.1"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    server = Server(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"vLLM server did not become ready:\n{server.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/v1/models", timeout=2).status_code == 200:
                return server
        time.sleep(1.0)
