"""Measure what simulated engines cost in CPU: ``python -m worker.engines.sim.cpu_probe [--help]``.

Runs N prefill + N decode ``SimEngine`` instances in this one process and reports process CPU time
over wall time (1.0 = one core) for three phases:

* idle: engines started, no requests (should be ~0: nothing polls);
* decode: every decode engine keeps ``--batch`` greedy requests decoding (the steady state of a
  loaded decode pool); reports CPU per engine step and per generated token;
* pd: requests flow prefill -> handoff -> decode at ``--rate`` requests/s in total, the way the
  orchestrator drives a disaggregated fleet.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import time

from protocol.engine_args import SimArgs
from protocol.types import SamplingSpec
from worker.engine import EngineRequest, EngineSpec
from worker.engines.sim.adapter import SimEngine


def _engines(n: int, role: str, args: SimArgs) -> list[SimEngine]:
    return [SimEngine(EngineSpec(model="", worker_id=f"{role}-{i}", role=role, args=args)) for i in range(n)]


def _steps(engines: list[SimEngine]) -> int:
    return sum(e.steps for e in engines)


def _late(engines: list[SimEngine]) -> int:
    return sum(e.late_steps for e in engines)


async def _measure(seconds: float) -> tuple[float, float]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    return time.process_time() - cpu0, time.perf_counter() - wall0


async def main(opts: argparse.Namespace) -> None:
    args = SimArgs(profile=opts.profile, speedup=opts.speedup)
    prefill, decode = _engines(opts.engines, "prefill", args), _engines(opts.engines, "decode", args)
    for e in prefill + decode:
        await e.start()
    rng = random.Random(0)
    ids = itertools.count()
    tokens = [0]

    cpu, wall = await _measure(opts.seconds)
    print(f"idle   {2 * opts.engines} engines: cpu {cpu:.4f} s over {wall:.2f} s = {cpu / wall:.4f} cores")

    async def consume(engine: SimEngine, request: EngineRequest) -> None:
        async for delta in engine.generate(request):
            tokens[0] += len(delta.token_ids)

    async def keep_decoding(engine: SimEngine) -> None:
        while True:
            prompt = tuple(rng.randrange(1, 30000) for _ in range(opts.prompt))
            await consume(engine, EngineRequest(f"r{next(ids)}", prompt, SamplingSpec(opts.output, 0.0)))

    tasks = [asyncio.create_task(keep_decoding(e)) for e in decode for _ in range(opts.batch)]
    await asyncio.sleep(1.0)  # warm up
    tokens[0], steps0, late0 = 0, _steps(decode), _late(decode)
    cpu, wall = await _measure(opts.seconds)
    steps, late = _steps(decode) - steps0, _late(decode) - late0
    print(f"decode {opts.engines} engines x {opts.batch} seqs: {cpu / wall:.3f} cores, {steps / wall:.0f} steps/s, "
          f"{tokens[0] / wall:.0f} tokens/s, {1e6 * cpu / max(steps, 1):.0f} us/step, "
          f"{1e6 * cpu / max(tokens[0], 1):.1f} us/token, {late} steps late (CPU-starved)")
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    async def one_pd() -> None:
        rid = f"pd{next(ids)}"
        prompt = tuple(rng.randrange(1, 30000) for _ in range(opts.prompt))
        p, d = rng.choice(prefill), rng.choice(decode)
        handoff = None
        async for delta in p.generate(EngineRequest(rid, prompt, SamplingSpec(1, 0.0), remote_decode=True)):
            handoff = delta.handoff
        await consume(d, EngineRequest(rid, prompt, SamplingSpec(opts.output, 0.0), handoff=handoff))

    async def arrivals() -> None:
        inflight: set[asyncio.Task[None]] = set()
        while True:
            await asyncio.sleep(rng.expovariate(opts.rate))
            task = asyncio.create_task(one_pd())
            inflight.add(task)
            task.add_done_callback(inflight.discard)

    gen = asyncio.create_task(arrivals())
    await asyncio.sleep(1.0)
    tokens[0] = 0
    cpu, wall = await _measure(opts.seconds)
    running = sum(e.load().running for e in decode)
    print(f"pd     {opts.rate:.0f} req/s over {2 * opts.engines} engines: {cpu / wall:.3f} cores, "
          f"{tokens[0] / wall:.0f} tokens/s, {running} decoding at the end")
    gen.cancel()
    for e in prefill + decode:
        await e.shutdown()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=int, default=32, help="prefill engines (and as many decode)")
    parser.add_argument("--profile", default="llama-3.1-8b-h100")
    parser.add_argument("--speedup", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=8, help="concurrent requests per decode engine")
    parser.add_argument("--prompt", type=int, default=512, help="prompt tokens")
    parser.add_argument("--output", type=int, default=128, help="output tokens")
    parser.add_argument("--rate", type=float, default=20.0, help="P/D requests per second, all engines")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per phase")
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
