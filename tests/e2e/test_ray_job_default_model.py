"""The main job as a user runs it on a cluster: ``ray job submit -- pdserve up --config
configs/local-cpu.yaml`` (the real SmolLM2 chat model, disaggregated) against a local Ray cluster;
it answers a question sensibly, and ``ray job stop`` leaves no pdserve or vLLM process behind."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from orchestrator.model_prep import prepare_smollm2
from tests.e2e.proctree import thread_cores, thread_niceness, worker_processes
from tests.e2e.rayjob import BIN, RayCli, our_processes, stop_leaves_nothing, submit_and_wait, wait_dashboard
from tests.e2e.servers import ROOT
from transfer.ports import free_ports

pytestmark = pytest.mark.e2e
# Ray 2.60's dashboard (and so `ray job submit`) requires a token; loopback-only single-node cluster.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16)}


_ray = RayCli(RAY_ENV)


def test_ray_job_submit_serves_default_model_and_stops_clean() -> None:
    model = prepare_smollm2()
    gcs, dash, client_port, agent_http, agent_grpc, metrics, runtime_env = free_ports(7)
    ready_dir = Path(tempfile.mkdtemp(prefix="pdserve-rayjob-"))
    head_log = open(ready_dir / "ray-head.log", "wb")  # noqa: SIM115 - closed in finally
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={client_port}",
         # Own agent ports: another Ray on this host (the embedded one of pd_server) holds the defaults.
         f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
         "--num-cpus=2", "--include-dashboard=true", "--disable-usage-stats"],
        cwd=ROOT, stdout=head_log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, **RAY_ENV})
    address = f"http://127.0.0.1:{dash}"
    job_id = f"pdserve-test-{os.getpid()}"
    try:
        wait_dashboard(address, head, time.monotonic() + 180, ready_dir / "ray-head.log")
        ready = ready_dir / "url"
        runtime_env = {"env_vars": {"PDSERVE_IPC_DIR": str(ready_dir), "PYTHONUNBUFFERED": "1"}}
        entry = [sys.executable, "-m", "orchestrator.cli", "up", "--config", "configs/local-cpu.yaml",
                 "--set", "server.port=0", "--set", f"model.path={model}", "--ready-file", str(ready)]
        url = submit_and_wait(_ray, address, job_id, runtime_env, entry, ready, time.monotonic() + 180, 900)
        reply = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
            "model": "SmolLM2-135M-Instruct", "max_tokens": 24, "temperature": 0,
            "messages": [{"role": "user", "content": "What is the capital of France?"}]})
        assert reply.status_code == 200, reply.text
        answer = reply.json()["choices"][0]["message"]["content"]
        assert "Paris" in answer, answer
        assert reply.headers["x-prefill-worker"] == "prefill-0"
        # One node: every worker binds loopback (Ray itself reports the host's network address here).
        for row in httpx.get(f"{url}/admin/workers", timeout=10).json()["data"]:
            assert row["node"] == "127.0.0.1" and row["address"].startswith("127.0.0.1:"), row
            assert row["side_channel"].startswith("127.0.0.1:"), row
        ours = our_processes(str(ready_dir))
        assert len(ours) >= 2  # pdserve up and at least the worker processes
        # Each engine computes on its own core: every thread of the prefill worker's processes (vLLM's
        # engine core and model runner included) on cores none of the decode worker's threads may use.
        prefill = thread_cores(worker_processes(0, "prefill-0", sorted(ours)))
        decode = thread_cores(worker_processes(0, "decode-0", sorted(ours)))
        assert any("VLLM::Worker" in name for name in prefill) and any("VLLM::Worker" in name for name in decode)
        prefill_cores = set().union(*prefill.values())
        decode_cores = set().union(*decode.values())
        assert not prefill_cores & decode_cores, (prefill, decode)
        # ...at the default priority, as plain vLLM does, not at Ray's worker niceness (15).
        workers = worker_processes(0, "prefill-0", sorted(ours)) + worker_processes(0, "decode-0", sorted(ours))
        niceness = thread_niceness(workers)
        assert niceness and set(niceness.values()) == {0}, niceness
        stop_leaves_nothing(_ray, address, job_id, ours)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head_log.close()
