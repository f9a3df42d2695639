"""Servers for the peer-router suites: simulated workers behind vLLM's HTTP API (``python -m
worker.sim_http``) and the peer routers in front of them (vllm-router, sglang-router), each in its own
process session on loopback, stopped with its context.

* ``serve_sim_http``: ``processes`` sim_http processes sharing ``workers`` simulated engines; yields each
  worker's URL and KV-event endpoint once every one of them serves.
* ``serve_router``: one peer router (``ROUTERS``) over those workers; yields its URL once it answers
  ``/v1/models``. The routers come from their own virtual environment (``scripts/setup_peers.sh``, default
  ``.venv-peers``; ``$PDSERVE_PEERS_VENV`` overrides), never from pdserve's.
* ``scrape``: a worker's request and prefix-cache counters from its ``/metrics``.

Everything is bounded: a server that is not ready within its timeout raises ``RuntimeError`` with the tail
of its log, and every server is stopped (SIGINT, SIGTERM, SIGKILL to its process group) on exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.suites.common import ROOT, Running, http_get, log, serve_http, spawn, wait_until_ready
from transfer.ports import free_ports


@dataclass(frozen=True)
class SimWorker:
    """One simulated worker: its OpenAI API root, its KV-event endpoint and its engine id."""

    url: str
    events: str
    engine_id: str


def peers_venv() -> Path:
    """The peer routers' virtual environment (``$PDSERVE_PEERS_VENV`` or ``ROOT/.venv-peers``)."""
    return Path(os.environ.get("PDSERVE_PEERS_VENV", ROOT / ".venv-peers"))


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now (the router binds it a moment later; loopback only, bench use only)."""
    return free_ports(1, host)[0]


def free_port_range(count: int, host: str = "127.0.0.1", first: int = 20000, last: int = 30000) -> int:
    """The first port P in [first, last) such that P .. P+count-1 are all free on ``host`` now."""
    for base in range(first, last - count, count):
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports in [{first}, {last}) on {host}")


def _ready_lines(log_path: Path) -> list[dict[str, str]]:
    """The JSON lines a sim_http process printed once each of its workers served."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return [json.loads(x) for x in text.splitlines() if x.startswith("{")]


@contextlib.contextmanager
def serve_sim_http(workers: int, processes: int, sets: Sequence[str], tokenizer: str, model: str,
                   workdir: Path, ready_timeout_s: float = 120.0) -> Iterator[list[SimWorker]]:
    """``processes`` x ``python -m worker.sim_http --workers workers/processes --set ...`` on 127.0.0.1."""
    if workers % processes:
        raise ValueError("workers must be a multiple of processes")
    running: list[tuple[Running, Path]] = []
    try:
        for i in range(processes):
            out = workdir / f"sim_http-{i}.log"
            per = workers // processes
            cmd = [sys.executable, "-m", "worker.sim_http", "--profile", "llama-3.1-8b-h100",
                   "--workers", str(per), "--host", "127.0.0.1", "--base-port", "0",
                   "--events-base-port", str(free_port_range(per, first=20000 + 200 * i)),
                   "--tokenizer", str(Path(tokenizer).expanduser()), "--served-model-name", model,
                   "--worker-id-prefix", f"sim{i}"]
            for item in sets:
                cmd += ["--set", item]
            running.append((Running(spawn(cmd, out), "", out), out))
        log(f"start: {processes} x worker.sim_http ({workers} workers) " + " ".join(f"--set {s}" for s in sets))
        found: list[SimWorker] = []
        for run, out in running:
            wait_until_ready(lambda path=out: len(_ready_lines(path)) == workers // processes,  # type: ignore[misc]
                  run.proc, out, "worker.sim_http", ready_timeout_s)
            found += [SimWorker(x["url"], x["events"], x["engine_id"]) for x in _ready_lines(out)]
        yield found
    finally:
        for run, _ in running:
            run.stop(grace_s=15.0)


def _vllm_router(policy: str, port: int, workers: Sequence[SimWorker], model: str, block_size: int) -> list[str]:
    cmd = ["vllm-router", "--host", "127.0.0.1", "--port", str(port), "--policy", policy,
           "--worker-urls", *(w.url for w in workers), "--log-level", "warning",
           "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]
    if policy == "kv_aware":
        for w in workers:
            cmd += ["--kv-event-source", f"{w.url}={w.events}"]
        cmd += ["--kv-event-block-size", str(block_size), "--kv-event-model", model]
    return cmd


def _sglang_router(policy: str, port: int, workers: Sequence[SimWorker], model: str, block_size: int) -> list[str]:
    return ["sglang-router", "launch", "--host", "127.0.0.1", "--port", str(port), "--policy", policy,
            "--worker-urls", *(w.url for w in workers), "--log-level", "warn",
            "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]


# Peer router name -> its command line over the workers (policy, port, workers, model, KV block size).
ROUTERS: dict[str, Callable[[str, int, Sequence[SimWorker], str, int], list[str]]] = {
    "vllm-router": _vllm_router,
    "sglang-router": _sglang_router,
}


def serve_router(router: str, policy: str, workers: Sequence[SimWorker], model: str, block_size: int,
                 workdir: Path, ready_timeout_s: float = 120.0) -> contextlib.AbstractContextManager[Running]:
    """One peer router on a free loopback port; yields it once ``/v1/models`` answers."""
    bin_dir = peers_venv() / "bin"
    if not (bin_dir / router).exists():
        raise RuntimeError(f"{bin_dir / router} not found: run scripts/setup_peers.sh first")
    port = free_port()
    cmd = ROUTERS[router](policy, port, workers, model, block_size)
    cmd[0] = str(bin_dir / cmd[0])
    log("start: " + " ".join([router, *cmd[1:6]]) + f" ... ({len(workers)} workers)")
    return serve_http(cmd, f"http://127.0.0.1:{port}", workdir / f"{router}-{policy}.log", f"{router} ({policy})",
                      ready_timeout_s, {"PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}, grace_s=10.0)


_SAMPLE = re.compile(r"^(vllm:[a-z_]+?)(?:_total)?(?:\{[^}]*\})?\s+([0-9.eE+-]+)$")


def scrape(url: str) -> dict[str, float]:
    """``vllm:request_success``, ``vllm:prefix_cache_queries`` and ``vllm:prefix_cache_hits`` of one
    worker (summed over labels), from its ``/metrics``; empty when it does not answer."""
    text = http_get(f"{url}/metrics", timeout_s=5.0) or ""
    wanted = {"vllm:request_success", "vllm:prefix_cache_queries", "vllm:prefix_cache_hits"}
    totals: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1) in wanted:
            totals[m.group(1)] = totals.get(m.group(1), 0.0) + float(m.group(2))
    return totals


def scratch_dir(prefix: str) -> Path:
    """A fresh directory for server logs."""
    return Path(tempfile.mkdtemp(prefix=prefix))
