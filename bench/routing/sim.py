"""Replay a multi-turn trace against simulated prefill workers and a router, in simulated time.

Each prefill worker is a FIFO queue draining at a fixed token rate in front of a real block manager
(``worker.engines.sim.block_manager``: prefix cache, LRU eviction, vLLM-shaped KV events). A request's
prefill takes ``overhead_s + uncached tokens / tokens_per_s``; when it finishes its full blocks are
committed, the worker's events go to the router's prefix index, and the session's next turn arrives at
its wave time, or once the reply is decoded (``reply tokens * tpot_s``) and the user has thought.
An oracle block manager holding the whole fleet's capacity sees every prefill at the same moments: its
hits are what a single cache shared by all workers would have given.

The bench imports the simulated engine's block manager directly; the router never sees it, only its
events, as in production.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.routing.hit_accounting import HitTally
from orchestrator.scheduler.request import WorkerState
from orchestrator.scheduler.router import Router
from protocol.types import BlockRemoved, KvEventBatch
from worker.engines.sim.block_manager import BlockManager

from .trace import Trace


@dataclass(frozen=True)
class FleetShape:
    workers: int = 4
    blocks_per_worker: int = 4096
    block_size: int = 16
    tokens_per_s: float = 600.0
    overhead_s: float = 0.005
    tpot_s: float = 0.010
    queue_bound: int | None = None


@dataclass
class _Job:
    session: int
    turn: int
    tokens: tuple[int, ...]
    arrival: float
    predicted_uncached: int
    predicted_cached: int
    seq_id: str = ""


@dataclass
class _Worker:
    worker_id: str
    blocks: BlockManager
    queue: deque[_Job] = field(default_factory=deque)
    current: _Job | None = None
    busy_until: float = 0.0


@dataclass(frozen=True)
class RunResult:
    requests_per_worker: dict[str, int]
    tally: HitTally  # predicted (router) vs observed (engine) cached tokens
    oracle_cached_tokens: int
    ttft_s: tuple[float, ...]
    reasons: dict[str, int]
    evictions: int
    utilization: float  # busy time over (workers x time from first arrival to last finish)


def simulate(trace: Trace, fleet: FleetShape, router: Router,
             feed: Callable[[str, KvEventBatch], object] | None) -> RunResult:
    """Run the whole trace; deterministic for a given trace, fleet and router. ``feed`` receives each
    worker's event batches (``PrefixIndex.apply``), or None when the router's index learns only from
    its own routes (``ApproxPrefixIndex``)."""
    bs = fleet.block_size
    workers = [_Worker(f"p{i}", BlockManager(fleet.blocks_per_worker, bs)) for i in range(fleet.workers)]
    by_id = {w.worker_id: w for w in workers}
    oracle = BlockManager(fleet.blocks_per_worker * fleet.workers, bs)
    events: list[tuple[float, int, str, int, int]] = []  # (time, tie, kind, session | worker, turn)
    tie = 0

    def push(t: float, kind: str, a: int, b: int = 0) -> None:
        nonlocal tie
        heapq.heappush(events, (t, tie, kind, a, b))
        tie += 1

    for i, session in enumerate(trace.sessions):
        push(session.start_s, "arrive", i, 0)
    tally, oracle_cached, ttft = HitTally(), 0, []
    reasons: Counter[str] = Counter()
    served: Counter[str] = Counter()
    evictions = 0
    busy_s = 0.0
    seq_events = dict.fromkeys(by_id, 0)

    def state(w: _Worker, now: float) -> WorkerState:
        queued = sum(j.predicted_uncached for j in w.queue)
        if w.current is not None:
            queued += int(max(0.0, w.busy_until - now) * fleet.tokens_per_s)
        return WorkerState(w.worker_id, running=int(w.current is not None), waiting=len(w.queue),
                           kv_usage=w.blocks.usage, queued_prefill_tokens=queued, queue_bound=fleet.queue_bound,
                           prefill_tokens_per_s=fleet.tokens_per_s)

    def start(w: _Worker, now: float) -> None:
        nonlocal oracle_cached, busy_s
        job = w.queue.popleft()
        job.seq_id = f"{job.session}-{job.turn}"
        cached = w.blocks.allocate(job.seq_id, job.tokens, len(job.tokens))
        shared = oracle.allocate(job.seq_id, job.tokens, len(job.tokens))
        if cached is None or shared is None:
            raise RuntimeError("a simulated KV pool is too small for one prompt")
        nonlocal tally
        tally = tally.add(prompt_tokens=len(job.tokens), predicted_tokens=job.predicted_cached,
                          observed_tokens=cached)
        oracle_cached += shared
        w.current = job
        w.busy_until = now + fleet.overhead_s + (len(job.tokens) - cached) / fleet.tokens_per_s
        busy_s += w.busy_until - now
        push(w.busy_until, "done", workers.index(w))

    first_arrival, now = events[0][0], 0.0
    while events:
        now, _, kind, a, b = heapq.heappop(events)
        if kind == "arrive":
            session = trace.sessions[a]
            tokens = session.prompt(trace.system, b)
            req = router.make_request(tokens, session_key=session.session_id)
            decision = router.route_prefill(req, [state(w, now) for w in workers], now=now)
            reasons[decision.reason] += 1
            served[decision.worker_id] += 1
            w = by_id[decision.worker_id]
            predicted = min(decision.matched_blocks * bs, len(tokens))
            w.queue.append(_Job(a, b, tokens, now, len(tokens) - predicted, predicted))
            if w.current is None:
                start(w, now)
        else:
            w = workers[a]
            job = w.current
            assert job is not None
            for manager in (w.blocks, oracle):
                manager.commit(job.seq_id, job.tokens, len(job.tokens))
                manager.free(job.seq_id)
            batch = w.blocks.drain_events(now)
            if batch is not None:
                assert batch.seq == seq_events[w.worker_id]
                seq_events[w.worker_id] += 1
                evictions += sum(len(e.block_hashes) for e in batch.events if isinstance(e, BlockRemoved))
                if feed is not None:
                    feed(w.worker_id, batch)
            oracle.take_events()
            ttft.append(now - job.arrival)
            w.current = None
            session = trace.sessions[job.session]
            if job.turn + 1 < len(session.turns):
                done, nxt = session.turns[job.turn], session.turns[job.turn + 1]
                ready = now + len(done.reply) * fleet.tpot_s + nxt.think_s
                push(max(ready, nxt.not_before_s), "arrive", job.session, job.turn + 1)
            if w.queue:
                start(w, now)
    return RunResult({w.worker_id: served[w.worker_id] for w in workers}, tally, oracle_cached, tuple(ttft),
                     dict(reasons), evictions, busy_s / (fleet.workers * (now - first_arrival)))
