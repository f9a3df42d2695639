"""Helpers shared by the benchmark suite drivers in ``bench/suites``.

* ``serve_pdserve``: a context manager that starts ``pdserve up`` in its own process session on
  127.0.0.1, waits until it is ready, yields its URL and stops exactly that session (SIGINT to the group,
  then SIGTERM, then SIGKILL). ``pdserve up`` stops the worker processes it started.
* ``CpuSampler``: samples, once a second, the host's busy fraction (``/proc/stat``, all cores) and the CPU
  used by a process tree (the server and its workers), so a result can say whether the simulated fleet
  kept up or the 2-core host was saturated.
* ``bench``: runs the load generator (``pdserve-bench``, ``bench.cli.main``) in this process with the
  argument list given.

Everything is bounded: servers must be ready within ``ready_timeout_s``; samplers stop with their context.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[suite {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- CPU sampling
def _host_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all cores since boot."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return total - idle, total


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def process_tree(root: int) -> list[int]:
    """``root`` and its live descendants."""
    kids, out, stack = _children(), [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(kids.get(pid, []))
    return out


def _tree_ticks(root: int) -> int:
    """utime + stime (+ waited-for children) of ``root`` and its live descendants, in clock ticks."""
    total = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total


@dataclass
class CpuReport:
    cores: int
    seconds: float
    host_busy_mean: float  # fraction of all cores, 0..1
    host_busy_p90: float
    host_busy_max: float
    server_cores_mean: float  # cores used by the server tree (1.0 = one core)
    server_cores_max: float
    loadavg_start: tuple[float, float, float]
    loadavg_end: tuple[float, float, float]
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # (t, host busy, server cores)


class CpuSampler:
    """``with CpuSampler(pid) as s: ...`` then ``s.report``. Samples every ``interval_s`` in a thread; the
    server's CPU is that of the process tree(s) under ``root_pid`` (one pid or several)."""

    def __init__(self, root_pid: int | Sequence[int] | None, interval_s: float = 1.0) -> None:
        self.roots = [] if root_pid is None else [root_pid] if isinstance(root_pid, int) else list(root_pid)
        self.interval = interval_s
        self._stop = threading.Event()
        self._samples: list[tuple[float, float, float]] = []
        self.report: CpuReport | None = None

    def _loop(self) -> None:
        t0 = last_t = time.monotonic()
        busy0, total0 = _host_jiffies()
        ticks0 = sum(_tree_ticks(root) for root in self.roots)
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            busy, total = _host_jiffies()
            ticks = sum(_tree_ticks(root) for root in self.roots)
            host = (busy - busy0) / max(1, total - total0)
            server = max(0, ticks - ticks0) / CLK_TCK / max(1e-6, now - last_t)
            self._samples.append((round(now - t0, 2), round(host, 3), round(server, 3)))
            busy0, total0, ticks0, last_t = busy, total, ticks, now

    def __enter__(self) -> CpuSampler:
        self._load0 = os.getloadavg()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        hosts = sorted(s[1] for s in self._samples) or [0.0]
        servers = [s[2] for s in self._samples] or [0.0]
        self.report = CpuReport(
            cores=os.cpu_count() or 0,
            seconds=round(time.monotonic() - self._t0, 1),
            host_busy_mean=round(sum(hosts) / len(hosts), 3),
            host_busy_p90=hosts[int(0.9 * (len(hosts) - 1))],
            host_busy_max=hosts[-1],
            server_cores_mean=round(sum(servers) / len(servers), 3),
            server_cores_max=max(servers),
            loadavg_start=self._load0,
            loadavg_end=os.getloadavg(),
            samples=self._samples,
        )


# --------------------------------------------------------------------------- servers
@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def stop(self, grace_s: float = 60.0) -> None:
        for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=wait)


def log_tail(path: Path, n: int = 40) -> str:
    """The last ``n`` lines of a server log, for an error message."""
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    return ""


def spawn(cmd: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``cmd`` from the repository root in its own process session, unbuffered, its output to ``log_path``."""
    with open(log_path, "wb") as out:
        return subprocess.Popen(list(cmd), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def wait_until_ready(ready: Callable[[], bool], proc: subprocess.Popen[bytes], log_path: Path, what: str,
                     timeout_s: float) -> None:
    """Polls ``ready`` until it holds; raises ``RuntimeError`` with the log's tail if ``proc`` exits or
    ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready:\n{log_tail(log_path)}")
        time.sleep(0.25)


def http_get(url: str, timeout_s: float = 2.0) -> str | None:
    """The body of a GET of ``url``; None when it fails or answers other than 2xx."""
    with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return str(resp.read().decode())
    return None


@contextlib.contextmanager
def serve_http(cmd: Sequence[str], url: str, log_path: Path, what: str, ready_timeout_s: float,
               env: dict[str, str] | None = None, grace_s: float = 60.0) -> Iterator[Running]:
    """``cmd`` (``spawn``) serving the OpenAI API at ``url``: yields it once ``/v1/models`` answers, stops
    it (``Running.stop(grace_s)``) on exit."""
    running = Running(spawn(cmd, log_path, env), url, log_path)
    try:
        wait_until_ready(lambda: http_get(f"{url}/v1/models") is not None, running.proc, log_path, what,
                         ready_timeout_s)
        log(f"{what} ready at {url} (pid {running.proc.pid})")
        yield running
    finally:
        running.stop(grace_s)
        log(f"stopped pid {running.proc.pid}")


@contextlib.contextmanager
def serve_pdserve(config: str, overrides: Sequence[str] = (), ready_timeout_s: float = 600.0,
                  launcher: str | None = "local") -> Iterator[Running]:
    """``pdserve up --config CONFIG --launcher LAUNCHER --set server.port=0 --set ...`` in its own
    session; ``launcher=None`` leaves the flag out (the config's own, Ray by default, as ``make serve``)."""
    workdir = Path(tempfile.mkdtemp(prefix="pdserve-suite-"))
    ready = workdir / "url"
    log_path = workdir / "server.log"
    cmd = [sys.executable, "-m", "orchestrator.cli", "up", "--config", config,
           *(["--launcher", launcher] if launcher else []), "--set", "server.port=0", "--ready-file", str(ready)]
    for item in overrides:
        cmd += ["--set", item]
    log("start: " + " ".join(cmd[2:]))
    running = Running(spawn(cmd, log_path), "", log_path)
    try:
        wait_until_ready(ready.exists, running.proc, log_path, "pdserve up", ready_timeout_s)
        time.sleep(0.2)
        running.url = ready.read_text().strip()
        log(f"ready at {running.url} (pid {running.proc.pid})")
        yield running
    finally:
        running.stop()
        log(f"stopped pid {running.proc.pid}")


# --------------------------------------------------------------------------- running the client
def bench(argv: Sequence[str]) -> int:
    """``pdserve-bench ARGV`` in this process; returns its exit status. Raises ``KeyboardInterrupt`` when
    the client was interrupted (its status 130), so a suite stops at Ctrl-C instead of going on."""
    from bench.cli import main

    log("pdserve-bench " + " ".join(argv))
    rc = main(list(argv))
    if rc == 130:
        raise KeyboardInterrupt
    return rc


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__")
                               else str(o)) + "\n")


def finish_run(run_dir: Path, cpu: CpuSampler) -> CpuReport:
    """After a ``pdserve-bench`` run into ``run_dir`` under ``cpu``: writes ``cpu.json`` and drops
    ``records.json`` (``records.csv`` keeps every request; the JSON adds only per-chunk times); returns
    the CPU report."""
    assert cpu.report is not None
    write_json(run_dir / "cpu.json", cpu.report)
    (run_dir / "records.json").unlink(missing_ok=True)
    return cpu.report


def load_index(out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """``OUT/runs.json`` as an earlier run of the suite left it (or an index with no runs), with this
    run's ``machine`` and ``settings`` put over its own."""
    path = out / "runs.json"
    index = json.loads(path.read_text()) if path.exists() else {"runs": []}
    return index | {"machine": machine(), **settings}


def put_run(out: Path, index: dict[str, Any], key: Sequence[str], entry: dict[str, Any]) -> None:
    """Puts ``entry`` in place of the index's runs that match it on the fields ``key`` (at the end), then
    writes the index to ``OUT/runs.json``."""
    index["runs"] = [r for r in index["runs"] if [r[k] for k in key] != [entry[k] for k in key]]
    index["runs"].append(entry)
    write_json(out / "runs.json", index)


def git(*args: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
    return ""


def git_state() -> dict[str, object]:
    """The commit the servers ran from, and which serving files differed from it (others work in this tree)."""
    dirty = git("status", "--porcelain", "--", "orchestrator", "worker", "prefill", "decode", "transfer", "protocol",
                "configs", "bench")
    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": dirty.splitlines()}


def machine() -> dict[str, object]:
    """What the results were measured on."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = 0.0
    with contextlib.suppress(OSError, ValueError):
        mem_gb = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    return {"cpus": os.cpu_count(), "cpu_model": model, "mem_gib": round(mem_gb, 1),
            "python": platform.python_version(), "kernel": platform.release(),
            "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "git": git_state()}
