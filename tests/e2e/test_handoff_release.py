"""vLLM's side of freeing an unread handoff (``orchestrator/handoff_release.py``), on the shared real
vLLM deployment: a finished prefill's blocks stay held on the prefill worker until a decode engine reads
them or the lease (30 s) runs out; a one-token read of the handoff by a decode worker (what the
orchestrator sends when the client left before decoding) frees them before the lease ends.

Two prompts are prefilled on ``prefill-0`` over its gRPC API; only B is read (as the release does). After
the lease, the prefill engine reports exactly one expiry: A's, never B's."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import pytest

from orchestrator.pools.client import WorkerClient
from protocol.types import GenerateCall, PrefillCall, SamplingSpec
from tests.e2e.servers import Server

pytestmark = pytest.mark.e2e

LEASE_S = 30.0  # transfer.lease_timeout_s of configs/tiny-cpu.yaml (the default)


def _prompt(rng: random.Random) -> tuple[int, ...]:
    return tuple(rng.randrange(1000, 40000) for _ in range(400))  # unique: no prefix cache hit


async def _scenario(prefill_address: str, decode_address: str) -> tuple[int, int]:
    rng = random.Random(time.time_ns())
    prefill, decode = WorkerClient("prefill-0", prefill_address), WorkerClient("decode-0", decode_address)
    greedy_one = SamplingSpec(max_tokens=1, temperature=0.0)
    tag = rng.randrange(10**9)
    try:
        before = (await prefill.load()).engine.kv_leases_expired
        await prefill.prefill(PrefillCall(f"rel-a-{tag}", _prompt(rng), greedy_one), timeout_s=120)
        prompt_b = _prompt(rng)
        handoff_b = await prefill.prefill(PrefillCall(f"rel-b-{tag}", prompt_b, greedy_one), timeout_s=120)
        read = GenerateCall(request_id=f"rel-b-{tag}-release", prompt_token_ids=prompt_b, sampling=greedy_one,
                            handoff=handoff_b)
        chunks = [c async for c in decode.generate(read, 60.0, 60.0, deadline_s=60.0)]
        assert chunks and chunks[-1].finished
        await asyncio.sleep(LEASE_S + 5.0)
        # vLLM handles expiry on an engine step: one more prefill (read at once) makes the engine step.
        poke = _prompt(rng)
        handoff = await prefill.prefill(PrefillCall(f"rel-c-{tag}", poke, greedy_one), timeout_s=120)
        async for _ in decode.generate(GenerateCall(f"rel-c-{tag}-d", poke, greedy_one, handoff=handoff),
                                       60.0, 60.0, deadline_s=60.0):
            pass
        deadline = time.monotonic() + 20
        after = before
        while time.monotonic() < deadline:
            after = (await prefill.load()).engine.kv_leases_expired
            if after > before:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)  # a second expiry (B's), were it coming, would be counted by now
        return before, (await prefill.load()).engine.kv_leases_expired
    finally:
        await prefill.close()
        await decode.close()


def test_a_read_frees_a_vllm_handoff_before_its_lease_ends(pd_server: Server) -> None:
    rows = {row["id"]: row for row in httpx.get(f"{pd_server.url}/admin/workers", timeout=10).json()["data"]}
    before, after = asyncio.run(_scenario(str(rows["prefill-0"]["address"]), str(rows["decode-0"]["address"])))
    assert after - before == 1, f"expired leases {before} -> {after}: expected A's only (B was read)"
