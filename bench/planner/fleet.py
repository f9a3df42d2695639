"""A fleet of simulated engines driven in virtual time, in one process: one run of the planner.

``simulate(requests, arrivals, split, profile, policy)`` replays token requests on ``split.prefill``
prefill + ``split.decode`` decode engines (``split.decode`` colocated engines when ``prefill == 0``) and
returns one ``bench.record.RequestRecord`` per request, which ``bench.metrics`` scores as it scores a
``pdserve-bench`` run. Deterministic: no clock, no randomness beyond the router's seeded pickers.

Real code: each engine is ``worker.engines.sim.SimEngineCore`` (the sim worker's scheduler, block
manager, prefix cache, preemption and step-time model), stepped with ``begin_step``/``finish_step`` as the
sim adapter's loop does; placement is ``orchestrator.scheduler.Router`` (preset pipelines, disaggregation
policy, a ``PrefixIndex`` fed by every engine's KV events), called as ``orchestrator.flow`` calls it: plan
local or remote prefill, route the prefill, route the decode once the prefill returned its handoff; a
worker that prefills itself has the uncached tokens in its queue until the first token. A KV pull takes
the profile's transfer time on the decode engine's one link (pulls queue), then the prefill engine frees
the blocks, as the adapter does. Requests are sent at their arrival times (open loop); with
``chain_turns`` a turn also waits for its session's previous turn, as ``bench.runner`` does.

Simplified: the router sees each engine's load at the instant of the decision (the orchestrator's view
is up to a poll interval old, plus its own in-flight counts, which are modelled); HTTP, gRPC and event
latencies are zero; a handoff lease never expires; no worker fails.
"""
from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.metrics import Slo
from bench.record import RequestRecord
from orchestrator.scheduler.prefix_index import PrefixIndex
from orchestrator.scheduler.request import RouteRequest, WorkerState
from protocol.sim_profile import SimProfile
from protocol.types import KVHandoff, SamplingSpec
from worker.engine import EngineRequest
from worker.engines.sim.engine import Output, SimEngineCore, StepPlan
from worker.engines.sim.scheduler import Pull
from worker.engines.sim.timing import kv_bytes, transfer_time

from .spec import FleetPolicy, Split
from .tokens import TokenRequest, next_turns

HOST = "sim-host"


@dataclass(frozen=True)
class FleetRun:
    """One run: ``records[i]`` is request i's record (an error record when the run stopped before it
    finished); ``stopped_early``: the miss budget ran out; ``steps``: engine steps simulated."""

    records: tuple[RequestRecord, ...]
    stopped_early: bool
    steps: int


@dataclass(eq=False)
class _Engine:
    worker_id: str
    role: str  # "prefill", "decode" or "both"
    core: SimEngineCore
    busy: bool = False
    link_free_at: float = 0.0
    in_flight: int = 0
    queued_prefill_tokens: int = 0


@dataclass(eq=False)
class _Live:
    route: RouteRequest
    sent: float
    first: float | None = None
    tokens: int = 0
    missed: bool = False
    source: _Engine | None = None  # the prefill engine while it computes or holds the handoff
    uncached: int = 0
    lease: str = ""
    error: str | None = None
    end: float | None = None


class _Fleet:
    def __init__(self, requests: Sequence[TokenRequest], arrivals: Sequence[float], split: Split,
                 profile: SimProfile, policy: FleetPolicy, slo: Slo | None, miss_budget: int | None,
                 chain_turns: bool) -> None:
        if len(arrivals) != len(requests):
            raise ValueError("one arrival time per request")
        self.reqs, self.arrivals, self.split, self.profile, self.policy = requests, arrivals, split, profile, policy
        self.slo, self.miss_budget = slo, miss_budget
        roles = ["both"] * split.decode if split.colocated else ["prefill"] * split.prefill + ["decode"] * split.decode
        self.engines = [_Engine(f"{role[0]}{i}", role, SimEngineCore(profile)) for i, role in enumerate(roles)]
        self.prefill = [e for e in self.engines if e.role == "prefill"]
        self.decode = [e for e in self.engines if e.role != "prefill"]
        self.index = PrefixIndex(profile.model, profile.block_size)
        self.router = policy.router(profile.model, profile.block_size, self.index, colocated=split.colocated)
        self.live: list[_Live | None] = [None] * len(requests)
        self.next_turn = next_turns(requests) if chain_turns else {}
        self.now, self._tie = 0.0, 0
        self._heap: list[tuple[float, int, str, Any]] = []
        self.misses = self.steps = 0

    # ----------------------------------------------------------------- the loop
    def _at(self, t: float, kind: str, payload: Any) -> None:
        heapq.heappush(self._heap, (t, self._tie, kind, payload))
        self._tie += 1

    def run(self) -> FleetRun:
        later_turns = set(self.next_turn.values())  # sent when the turn before them finishes
        for i, t in enumerate(self.arrivals):
            if i not in later_turns:
                self._at(t, "send", i)
        stopped = False
        handlers: dict[str, Callable[[Any], None]] = {
            "send": self._send, "step": self._step_done, "pull": self._pull_done, "deadline": self._deadline}
        while self._heap:
            if self.miss_budget is not None and self.misses > self.miss_budget:
                stopped = True
                break
            self.now, _, kind, payload = heapq.heappop(self._heap)
            handlers[kind](payload)
        return FleetRun(tuple(self._record(i) for i in range(len(self.reqs))), stopped, self.steps)

    def _send(self, i: int) -> None:
        req, now = self.reqs[i], self.now
        route = self.router.make_request(req.prompt, session_key=req.session, request_id=req.request_id,
                                         kv_bytes_per_token=self.profile.kv_bytes_per_token)
        live = self.live[i] = _Live(route, now)
        if self.slo is not None and self.slo.ttft_s is not None and self.miss_budget is not None:
            self._at(now + self.slo.ttft_s, "deadline", i)
        pstates, dstates = self._states(self.prefill), self._states(self.decode)
        match = self.router.match(route)
        if self.split.colocated:
            seat = self.router.route_prefill(route, dstates, match=match, now=now)
        else:
            plan = self.router.plan(route, pstates, dstates, match=match)
            # a local prefill runs on the decode worker the plan priced (``local``: set exactly when local)
            seat = plan.local or self.router.route_prefill(route, pstates, match=match, now=now)
            if plan.local is None:
                live.source = self.engines[self._id(seat)]
        target = self.engines[self._id(seat)]
        live.uncached = route.uncached_tokens(seat.matched_blocks)
        target.in_flight += 1
        target.queued_prefill_tokens += live.uncached
        remote = live.source is not None
        self._add(target, i, EngineRequest(f"r{i}", req.prompt, _sampling(1 if remote else req.max_tokens),
                                           remote_decode=remote))

    def _add(self, engine: _Engine, i: int, request: EngineRequest) -> None:
        try:
            engine.core.add(request)
        except ValueError as exc:  # e.g. a prompt longer than max_model_len: the request fails
            live = self.live[i]
            assert live is not None
            engine.in_flight -= 1
            engine.queued_prefill_tokens -= live.uncached
            live.uncached = 0
            if live.source is not None and not request.remote_decode:  # a refused handoff: free its blocks
                live.source.core.release(live.lease)
                self._kick(live.source)
            self._finish(i, f"refused: {exc}")
            return
        self._kick(engine)

    def _kick(self, engine: _Engine) -> None:
        """Start the engine's next step if it is idle and has work, as the adapter's loop does."""
        while not engine.busy:
            plan = engine.core.begin_step()
            if plan is None:
                break
            for pull in plan.schedule.pulls:
                seconds = transfer_time(self.profile, kv_bytes(self.profile, pull.num_blocks))
                engine.link_free_at = max(self.now, engine.link_free_at) + seconds
                self._at(engine.link_free_at, "pull", (engine, pull, seconds))
            if plan.schedule.chunks:
                engine.busy = True
                self._at(self.now + plan.duration_s, "step", (engine, plan))
        self._events(engine)

    def _events(self, engine: _Engine) -> None:
        batch = engine.core.drain_events(self.now)
        if batch is not None:
            self.index.apply(engine.worker_id, batch)

    def _step_done(self, payload: tuple[_Engine, StepPlan]) -> None:
        engine, plan = payload
        engine.busy = False
        self.steps += 1
        for out in engine.core.finish_step(plan):
            i = int(out.request_id[1:])
            if engine.role == "prefill":
                self._handoff(engine, i, out)
            else:
                self._tokens(engine, i, out)
        self._kick(engine)

    def _handoff(self, source: _Engine, i: int, out: Output) -> None:
        live, req = self.live[i], self.reqs[i]
        assert live is not None and out.held_blocks is not None
        source.in_flight -= 1
        source.queued_prefill_tokens -= live.uncached
        live.lease, live.uncached = out.lease, 0
        target = self.engines[self._id(self.router.route_decode(live.route, self._states(self.decode),
                                                                  source_host=HOST))]
        handoff = KVHandoff(engine_id=source.worker_id, block_ids=(out.held_blocks,), host=HOST, port=0,
                            request_id=out.lease, first_token=out.token_ids[0], num_cached_tokens=out.num_cached_tokens,
                            prompt_tokens=len(req.prompt))
        target.in_flight += 1
        self._add(target, i, EngineRequest(f"r{i}", req.prompt, _sampling(req.max_tokens), handoff=handoff))

    def _pull_done(self, payload: tuple[_Engine, Pull, float]) -> None:
        engine, pull, seconds = payload
        live = self.live[int(pull.seq_id[1:])]
        if engine.core.pull_done(pull, seconds) and live is not None and live.source is not None:
            live.source.core.release(live.lease)  # NIXL's completion notification frees the prefill's blocks
            self._kick(live.source)
            live.source = None
        self._kick(engine)

    def _tokens(self, engine: _Engine, i: int, out: Output) -> None:
        live = self.live[i]
        assert live is not None
        now = self.now
        if live.first is None:
            live.first = now
            engine.queued_prefill_tokens -= live.uncached  # a local prefill's work is done
            live.uncached = 0
            if self.slo is not None and self.slo.ttft_s is not None and now - live.sent > self.slo.ttft_s:
                self._miss(live)
        live.tokens += len(out.token_ids)
        if out.finish_reason is None:
            return
        engine.in_flight -= 1
        tpot_slo = self.slo.tpot_s if self.slo is not None else None
        if tpot_slo is not None and live.tokens > 1 and (now - live.first) / (live.tokens - 1) > tpot_slo:
            self._miss(live)
        self._finish(i, None)

    def _finish(self, i: int, error: str | None) -> None:
        live = self.live[i]
        assert live is not None
        live.end, live.error = self.now, error
        if error is not None:
            self._miss(live)
        nxt = self.next_turn.get(i)
        if nxt is not None:
            self._at(max(self.arrivals[nxt], self.now), "send", nxt)

    def _deadline(self, i: int) -> None:
        if (live := self.live[i]) is not None and live.first is None:
            self._miss(live)

    def _miss(self, live: _Live) -> None:
        self.misses += not live.missed
        live.missed = True

    # ----------------------------------------------------------------- helpers
    def _states(self, engines: list[_Engine]) -> list[WorkerState]:
        """``orchestrator.flow.worker_state`` of each engine, from its load now."""
        bound = self.policy.prefill_queue_bound if engines is self.prefill else self.policy.decode_queue_bound
        out = []
        for e in engines:
            running = e.core.scheduler.num_running
            waiting = max(e.core.scheduler.num_waiting, e.in_flight - running)
            out.append(WorkerState(worker_id=e.worker_id, host=HOST, running=running, waiting=waiting,
                                   kv_usage=e.core.blocks.usage, queued_prefill_tokens=e.queued_prefill_tokens,
                                   queue_bound=bound))
        return out

    def _id(self, decision: Any) -> int:  # worker ids are a role letter then the engine's index
        return int(decision.worker_id[1:])

    def _record(self, i: int) -> RequestRecord:
        req, live = self.reqs[i], self.live[i]
        if live is None or live.end is None or live.error is not None or live.first is None:
            sent = live.sent if live is not None else self.arrivals[i]
            error = live.error if live is not None and live.error else "not finished when the run stopped"
            return RequestRecord(req.request_id, sent, session_id=req.session, turn=req.turn, error=error)
        return RequestRecord(req.request_id, live.sent, (live.first - live.sent,), live.end - live.sent,
                             scheduled_s=self.arrivals[i], session_id=req.session, turn=req.turn,
                             prompt_tokens=len(req.prompt), output_tokens=live.tokens, status=200)


def _sampling(max_tokens: int) -> SamplingSpec:
    return SamplingSpec(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)


def simulate(requests: Sequence[TokenRequest], arrivals: Sequence[float], split: Split, profile: SimProfile,
             policy: FleetPolicy = FleetPolicy(), *, slo: Slo | None = None,
             miss_budget: int | None = None, chain_turns: bool = False) -> FleetRun:
    """Run every request to completion, or stop once more than ``miss_budget`` requests are known to miss
    ``slo`` (a TTFT miss is known at its deadline, a TPOT miss at the end of the answer)."""
    return _Fleet(requests, arrivals, split, profile, policy, slo, miss_budget, chain_turns).run()
