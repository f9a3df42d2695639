"""Measured links on a simulated fleet with racks (worker processes, the real Service and front end): one
prefill worker in rack 0 and a decode worker in each rack, the link between racks 10x slower than a NIC.
After some traffic the orchestrator's table, learnt from the decode workers' pull reports, rates the
cross-rack pair well below the same-rack one, /metrics shows both, and the prefill worker's speed is known."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import StartWorkers
from pd_harness import MODEL_NAME, SIM_VOCAB, FrontEnd, LoopThread, sim_config

from orchestrator.api.text import Tokenizer
from orchestrator.scheduler.links import LinkEstimate

pytestmark = pytest.mark.timeout(120)

PREFILL, SAME_RACK, OTHER_RACK = "127.1.1.1", "127.2.1.1", "127.2.2.1"


@pytest.fixture(scope="module")
def fleet(tiny_model_dir: Path, tokenizer: Tokenizer, harness_loop: LoopThread,
          start_workers: StartWorkers) -> Iterator[FrontEnd]:
    # 10 Gb/s NICs (the engines' link) and 1 Gb/s between racks; round robin so both pairs carry pulls.
    config = sim_config(tiny_model_dir, prefill=1, decode=2, decode_profile="round_robin",
                        engine_args={"link_bandwidth_bytes_per_s": 10e9 / 8},
                        topology={"workers_per_host": 1, "racks": 2, "cross_rack_gbps": 1.0})
    _, endpoints = start_workers(config)
    front = FrontEnd.start(harness_loop, config, endpoints, tokenizer)
    yield front
    front.stop()


def test_the_table_learns_that_the_cross_rack_link_is_slower(fleet: FrontEnd) -> None:
    front = fleet
    service = front.service
    assert [service.decode.get(w).host for w in ("decode-0", "decode-1")] == [SAME_RACK, OTHER_RACK]
    assert service.pool("prefill").get("prefill-0").host == PREFILL
    rng = random.Random(7)
    for i in range(12):  # one at a time, prompts of 60..600 tokens: no pull waits for another
        tokens = [rng.randrange(1000, SIM_VOCAB) for _ in range(rng.randrange(60, 600))]
        reply = httpx.post(f"{front.url}/v1/completions", timeout=30,
                           json={"model": MODEL_NAME, "prompt": tokens, "max_tokens": 2})
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-prefill-worker"] == "prefill-0", i

    estimates = front.loop.run(_estimates(front))
    near, far = estimates[(PREFILL, SAME_RACK)], estimates[(PREFILL, OTHER_RACK)]
    assert near.samples >= 4 and far.samples >= 4
    # The engines report their modelled pulls exactly; between racks the link is 10x slower.
    assert far.bandwidth_bytes_per_s == pytest.approx(near.bandwidth_bytes_per_s / 10, rel=0.05)
    for dst, estimate in ((SAME_RACK, near), (OTHER_RACK, far)):
        gauge = front.metric("pdserve_link_bandwidth_bytes_per_second", src=PREFILL, dst=dst)
        assert gauge == pytest.approx(estimate.bandwidth_bytes_per_s)
        assert front.metric("pdserve_link_pulls_total", src=PREFILL, dst=dst, measure="worker") == estimate.samples
    snapshot = service.links.snapshot()
    assert snapshot.transfer_seconds(10**6, PREFILL, OTHER_RACK) > 5 * snapshot.transfer_seconds(10**6, PREFILL,
                                                                                                   SAME_RACK)
    assert service.pool("prefill").get("prefill-0").prefill_speed.tokens_per_s > 0
    assert front.metric("pdserve_worker_load", worker="prefill-0", figure="prefill_tokens_per_s") > 0


async def _estimates(front: FrontEnd) -> dict[tuple[str, str], LinkEstimate]:
    """The table as the event loop that owns it sees it."""
    return front.service.links.estimates()
