"""Two Ray nodes on this host's loopback: a head at 127.0.0.3 labelled for the prefill pool and a node at
127.0.0.2 labelled for the decode pool. ``ray job submit -- pdserve up --config configs/two-node-cpu.yaml``
puts each pool on its node; every worker's endpoints are on its own node's address, the decode worker
pulls the prompt's KV over NIXL from the prefill worker on the other node, greedy output equals a single
vLLM instance's, and ``ray job stop`` leaves no pdserve or vLLM process behind on either node."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.e2e.proctree import descendants, listening_addresses
from tests.e2e.promtext import sample
from tests.e2e.rayjob import BIN, RayCli, our_processes, stop_leaves_nothing, submit_and_wait, wait_dashboard
from tests.e2e.servers import ROOT, Server
from transfer.ports import free_ports

pytestmark = pytest.mark.e2e
HEAD, NODE = "127.0.0.3", "127.0.0.2"
# Several nodes on one host need the multi-node switch on; token auth is what Ray 2.60's job API wants.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}


_ray = RayCli(RAY_ENV)


def _start_node(args: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    agent_http, agent_grpc, metrics, runtime_env = free_ports(4)
    return subprocess.Popen(
        [str(BIN / "ray"), "start", "--block", *args, "--num-cpus=1", "--disable-usage-stats",
         f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **RAY_ENV})


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _wait_nodes(address: str, count: int, deadline: float) -> None:
    script = "import ray; ray.init(address='auto'); print(sum(n['Alive'] for n in ray.nodes()))"
    while True:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                              env={**os.environ, **RAY_ENV, "RAY_ADDRESS": address})
        if done.returncode == 0 and done.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        assert time.monotonic() < deadline, f"{count} Ray nodes not up: {done.stdout[-500:]}{done.stderr[-2000:]}"
        time.sleep(2)


def _assert_nothing_listens_off_loopback(head: subprocess.Popen[bytes], node: subprocess.Popen[bytes],
                                         workers: list[dict[str, str]]) -> None:
    """No process of either node listens on the host's network address, and each worker's gRPC server and
    NIXL side channel listen on exactly their node's address. Ray 2.60's own gRPC servers (GCS, raylets,
    each process's core worker) and its metrics servers listen on the wildcard when a node's address is
    not 127.0.0.1, and nothing in Ray turns that off; only loopback traffic reaches them here."""
    pids = [p for root in (head.pid, node.pid) for p in (root, *descendants(root))]
    listening = listening_addresses(pids)
    hosts = {ipaddress.ip_address(address.rsplit(":", 1)[0]) for address in listening}
    off_loopback = {str(h) for h in hosts if not (h.is_loopback or h.is_unspecified)}
    assert not off_loopback, f"listening on {off_loopback}: {listening}"
    for worker in workers:
        for endpoint in (worker["address"], worker["side_channel"]):
            assert endpoint in listening, f"{worker['id']}: {endpoint} is not listening as such: {sorted(listening)}"


def test_two_node_cluster_places_pools_on_their_nodes(tiny_model: Path, reference_server: Server) -> None:
    gcs, dash, client_port = free_ports(3, HEAD)
    workdir = Path(tempfile.mkdtemp(prefix="pdserve-2node-"))  # marks our processes: nothing of Ray's in it
    ray_dir = Path(tempfile.mkdtemp(prefix="ray2n-"))  # short: Ray's socket paths must fit in 107 bytes
    head_log = open(ray_dir / "head.log", "wb")  # noqa: SIM115 - closed in finally
    node_log = open(ray_dir / "node.log", "wb")  # noqa: SIM115
    head = _start_node(["--head", f"--node-ip-address={HEAD}", f"--port={gcs}", f"--dashboard-host={HEAD}",
                        f"--dashboard-port={dash}", f"--ray-client-server-port={client_port}",
                        "--include-dashboard=true", "--labels=pdserve-pool=prefill",
                        f"--temp-dir={ray_dir / 'head'}"], head_log)
    node: subprocess.Popen[bytes] | None = None
    address = f"http://{HEAD}:{dash}"
    job_id = f"pdserve-2node-{os.getpid()}"
    try:
        deadline = time.monotonic() + 240
        wait_dashboard(address, head, deadline, ray_dir / "head.log")
        node = _start_node([f"--address={HEAD}:{gcs}", f"--node-ip-address={NODE}", "--labels=pdserve-pool=decode",
                            f"--temp-dir={ray_dir / 'node'}"], node_log)
        _wait_nodes(f"{HEAD}:{gcs}", 2, deadline)
        ready = workdir / "url"
        runtime_env = {"env_vars": {"PDSERVE_IPC_DIR": str(workdir), "PYTHONUNBUFFERED": "1"}}
        overrides = ["server.port=0", f"model.path={tiny_model}", "model.name=tiny-llama", "model.prepare=null",
                     "engine.args.block_size=32"]
        entry = [sys.executable, "-m", "orchestrator.cli", "up", "--config", "configs/two-node-cpu.yaml",
                 "--ready-file", str(ready)]
        for item in overrides:
            entry += ["--set", item]
        url = submit_and_wait(_ray, address, job_id, runtime_env, entry, ready, deadline, 600)

        rows = {row["id"]: row for row in httpx.get(f"{url}/admin/workers", timeout=10).json()["data"]}
        prefill, decode = rows["prefill-0"], rows["decode-0"]
        assert prefill["node"] == HEAD and prefill["address"].startswith(f"{HEAD}:")
        assert prefill["side_channel"].startswith(f"{HEAD}:")
        assert decode["node"] == NODE and decode["address"].startswith(f"{NODE}:")
        assert decode["side_channel"].startswith(f"{NODE}:")
        _assert_nothing_listens_off_loopback(head, node, [prefill, decode])

        rng = random.Random(11)
        prompts = [[rng.randrange(200, 40000) for _ in range(n)] for n in (40, 130, 300)]
        body = {"model": "tiny-llama", "max_tokens": 12, "temperature": 0, "ignore_eos": True,
                "return_token_ids": True}
        for prompt in prompts:
            mine = httpx.post(f"{url}/v1/completions", json={**body, "prompt": prompt}, timeout=300)
            theirs = httpx.post(f"{reference_server.url}/v1/completions", json={**body, "prompt": prompt}, timeout=300)
            assert mine.status_code == 200, mine.text
            assert mine.headers["x-prefill-worker"] == "prefill-0" and mine.headers["x-decode-worker"] == "decode-0"
            assert mine.json()["choices"][0]["token_ids"] == theirs.json()["choices"][0]["token_ids"]
        # The decode worker on 127.0.0.2 read every prompt's blocks over NIXL from 127.0.0.3.
        time.sleep(1.5)  # load figures are polled every 0.5 s
        assert sample(url, "pdserve_worker_load", worker="decode-0", figure="kv_pulls") >= len(prompts)
        assert sample(url, "pdserve_worker_load", worker="decode-0", figure="kv_blocks_pulled") >= sum(
            -(-len(p) // 32) for p in prompts)

        ours = our_processes(str(workdir))
        assert len(ours) >= 3  # pdserve up and both workers' processes
        stop_leaves_nothing(_ray, address, job_id, ours)
    finally:
        for proc in (node, head):
            if proc is not None:
                _stop(proc)
        head_log.close()
        node_log.close()
