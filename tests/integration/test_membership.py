"""Live membership on the simulated fleet: workers killed with SIGKILL under load come back at new
addresses and serve again, their index entries dropped meanwhile; pools scale 1 -> 2 -> 1 and a decode
worker drains while a steady load runs, and no request fails. Traffic: loopback only, bounded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pd_harness import MODEL_NAME, FrontEnd, LoopThread, sim_config, wait_for
from pd_harness import admin_workers as workers

from orchestrator.api.text import Tokenizer
from orchestrator.config import PdserveConfig
from orchestrator.launch.launchers import LocalLauncher
from orchestrator.launch.plan import plan_processes


class SteadyLoad:
    """One client sending completion requests ``gap_s`` apart (each bounded by ``timeout_s``) until stopped,
    at most ``max_requests`` (a bound far above what a test's minute sends: the load must not run out
    while the test still waits on it). Records each request's status, prefill and decode worker, seconds."""

    def __init__(self, url: str, max_requests: int = 20_000, timeout_s: float = 20.0, gap_s: float = 0.02) -> None:
        self._gap = gap_s
        self.results: list[tuple[int, str, str, float]] = []
        self._url, self._max, self._timeout = url, max_requests, timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        with httpx.Client(timeout=self._timeout) as client:
            while not self._stop.wait(self._gap) and len(self.results) < self._max:
                start = time.monotonic()
                # A prompt sharing no first block with any other: no cached prefix (not even a chat
                # template's) pins the load to one worker, so every healthy worker gets its share.
                n = len(self.results)
                body = {"model": MODEL_NAME, "max_tokens": 8, "temperature": 0,
                        "prompt": [1000 + n % 40000, *range(200, 240)]}
                try:
                    reply = client.post(f"{self._url}/v1/completions", json=body)
                    status, decode = reply.status_code, reply.headers.get("x-decode-worker", "")
                    prefill = reply.headers.get("x-prefill-worker", "")
                except httpx.HTTPError as exc:
                    status, decode, prefill = 0, type(exc).__name__, ""
                self.results.append((status, prefill, decode, time.monotonic() - start))

    def failures(self) -> list[tuple[int, str, str, float]]:
        return [r for r in self.results if r[0] != 200]


@pytest.fixture
def fleet(tiny_model_dir: Path, tokenizer: Tokenizer, harness_loop: LoopThread,
          worker_logs: Path) -> Iterator[tuple[FrontEnd, PdserveConfig]]:
    """Two prefill and two decode sim workers, each in its own process, with live membership."""
    config = sim_config(tiny_model_dir, prefill=2, decode=2, process_per_worker=True)
    launcher = LocalLauncher()
    plans = plan_processes(config, run_id="itest-members")
    try:
        front = FrontEnd.start(harness_loop, config, launcher.start(plans, timeout_s=60), tokenizer,
                               launcher=launcher, plans=plans)
        try:
            yield front, config
        finally:
            front.stop()
    finally:
        launcher.stop()


def test_registry_lists_every_worker_with_its_node_addresses(fleet: tuple[FrontEnd, PdserveConfig]) -> None:
    front, _ = fleet
    rows = workers(front.url)
    assert sorted(rows) == ["decode-0", "decode-1", "prefill-0", "prefill-1"]
    for row in rows.values():
        assert row["state"] == "healthy" and row["node"] == "127.0.0.1"
        assert row["address"].startswith("127.0.0.1:") and row["pid"] > 0
        assert row["pool"] == row["role"] and row["restarts"] == 0


@pytest.mark.parametrize("victim", ["prefill-0", "decode-0"])
def test_a_killed_worker_comes_back_at_a_new_address(fleet: tuple[FrontEnd, PdserveConfig], victim: str) -> None:
    front, _ = fleet
    before = workers(front.url)[victim]
    route = _cached_on(front, victim)
    with SteadyLoad(front.url) as load:
        wait_for(lambda: len(load.results) >= 10, 30, "first requests")
        os.kill(before["pid"], signal.SIGKILL)
        # Marked down, and its cache forgotten, before it is back.
        wait_for(lambda: workers(front.url)[victim]["state"] in ("down", "starting"), 10, f"{victim} down")
        wait_for(lambda: victim not in front.loop.run(_match(front, route)), 5, f"{victim}'s index entries dropped")
        wait_for(lambda: workers(front.url)[victim]["state"] == "healthy", 30, f"{victim} back")
        served_before = len([r for r in load.results if victim in (r[1], r[2])])
        wait_for(lambda: len([r for r in load.results if victim in (r[1], r[2])]) > served_before, 30,
                 f"{victim} serving again")
    after = workers(front.url)[victim]
    assert after["restarts"] == 1 and after["pid"] != before["pid"] and after["address"] != before["address"]
    # Meanwhile every request went elsewhere or failed fast; none hung.
    assert all(seconds < 10 for _, _, _, seconds in load.results), [r for r in load.results if r[3] >= 10]
    assert len(load.failures()) <= 3, load.failures()
    assert front.metric("pdserve_worker_restarts_total", worker=victim) == 1


async def _match(front: FrontEnd, route: Any) -> dict[str, int]:
    return front.service.index.match(route.block_hashes)


def _cached_on(front: FrontEnd, worker: str) -> Any:
    """The route of a prompt (token ids) that ``worker`` served and the prefix index has seen it cache."""
    for attempt in range(40):
        ids = [7 + attempt, *range(100, 164)]
        reply = httpx.post(f"{front.url}/v1/completions", timeout=20,
                           json={"model": MODEL_NAME, "prompt": ids, "max_tokens": 2, "temperature": 0})
        assert reply.status_code == 200, reply.text
        if worker in (reply.headers["x-prefill-worker"], reply.headers["x-decode-worker"]):
            found = front.service.router.make_request(tuple(ids))
            wait_for(lambda found=found: worker in front.loop.run(_match(front, found)), 10, f"{worker}'s KV events")
            return found
    raise AssertionError(f"no request reached {worker}")


def test_scale_and_drain_under_load_fail_nothing(fleet: tuple[FrontEnd, PdserveConfig]) -> None:
    front, _ = fleet
    cli = [sys.executable, "-m", "orchestrator.cli"]

    def run(*args: str) -> str:
        done = subprocess.run([*cli, *args, "--url", front.url], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    with SteadyLoad(front.url) as load:
        wait_for(lambda: len(load.results) >= 5, 30, "first requests")
        run("scale", "prefill", "1", "--wait", "--timeout", "60")  # 2 -> 1: the newest goes
        assert sorted(w for w in workers(front.url) if w.startswith("prefill")) == ["prefill-0"]
        run("scale", "prefill", "2", "--wait", "--timeout", "60")  # 1 -> 2: a new id, never a reused one
        rows = workers(front.url)
        assert rows["prefill-2"]["state"] == "healthy" and "prefill-1" not in rows
        wait_for(lambda: any(r[1] == "prefill-2" for r in load.results), 30, "the new prefill worker serving")
        run("scale", "prefill", "1", "--wait", "--timeout", "60")
        run("drain", "decode-1", "--wait", "--timeout", "60")
        assert "decode-1" not in workers(front.url)
        mark = len(load.results) + 1  # the request in flight when the drain ended may have been placed before it
        wait_for(lambda: len(load.results) >= mark + 10, 30, "requests after the drain")
        assert all(r[2] != "decode-1" for r in load.results[mark:])
    assert not load.failures(), load.failures()
    assert len(load.results) >= 20
    table = run("workers")
    assert "prefill-0" in table and "decode-0" in table and "decode-1" not in table


def test_admin_refusals_are_openai_errors(fleet: tuple[FrontEnd, PdserveConfig]) -> None:
    front, _ = fleet
    cases = [("/admin/pools/nope/scale", {"replicas": 1}, 404), ("/admin/pools/decode/scale", {"replicas": 0}, 400),
             ("/admin/pools/decode/scale", {"replicas": 1, "extra": 1}, 400),
             ("/admin/workers/decode-9/drain", None, 404)]
    for path, body, status in cases:
        reply = httpx.post(f"{front.url}{path}", json=body, timeout=10)
        assert reply.status_code == status, (path, reply.text)
        assert "message" in reply.json()["error"]
    assert sorted(workers(front.url)) == ["decode-0", "decode-1", "prefill-0", "prefill-1"]
