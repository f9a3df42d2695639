"""Load: 1,000 concurrent streams through the real front end to a simulated fleet (2 prefill, 4 decode
workers in two processes), sent by a client in its own process. Every stream must end with its finish
reason and ``[DONE]``, nothing may stay placed or in flight afterwards, and the front end's memory (this
process's RSS: the front end runs here, the client does not) is reported before and after."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import StartWorkers
from pd_harness import MODEL_NAME, FrontEnd, LoopThread, sim_config

from orchestrator.api.text import Tokenizer

pytestmark = pytest.mark.timeout(240)

STREAMS = 1000
MAX_TOKENS = 16


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def test_a_thousand_concurrent_streams_all_finish(tiny_model_dir: Path, tokenizer: Tokenizer,
                                                  harness_loop: LoopThread, start_workers: StartWorkers,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = sim_config(tiny_model_dir, prefill=2, decode=4,
                        engine_args={"num_blocks": 8192, "max_num_seqs": 512, "max_num_batched_tokens": 8192})
    _, endpoints = start_workers(config)
    front = FrontEnd.start(harness_loop, config, endpoints, tokenizer)
    try:
        decode = front.service.decode
        before = rss_mib()
        client = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("load_client.py")), front.url, MODEL_NAME, str(STREAMS),
             str(MAX_TOKENS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        peak = 0  # requests seated on decode workers at once, sampled
        deadline = time.monotonic() + 200
        while client.poll() is None and time.monotonic() < deadline:
            peak = max(peak, sum(h.in_flight for h in decode))
            time.sleep(0.01)
        if client.poll() is None:
            client.kill()
        out, err = client.communicate(timeout=10)
        after = rss_mib()
        assert client.returncode == 0, err[-2000:]
        result = json.loads(out.strip().splitlines()[-1])
        with capsys.disabled():
            print(f"\n{STREAMS} streams: {result}; at most {peak} at once on the decode workers; "
                  f"front end RSS {before:.0f} MiB before, {after:.0f} MiB after")
        assert result["errors"] == 0 and result["ok"] == STREAMS, result
        assert peak >= STREAMS // 2, peak  # they really ran together
        assert front.metric("pdserve_requests_total", endpoint="completions", status="200") == STREAMS
        pools = [front.service.decode, front.service.prefill]
        assert front.wait_until(lambda: all(h.in_flight == 0 for pool in pools if pool for h in pool), 5)
        assert after - before < 512, (before, after)  # no per-stream state kept once the streams are done
    finally:
        front.stop()
