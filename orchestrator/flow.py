"""The request's path through the pools: place (route + prefill), then stream (decode), then release.

``place`` hashes the prompt once, decides remote or local prefill, picks a prefill worker (retrying
once on another worker when one fails), runs the Prefill RPC and picks a decode worker priced by the
KV transfer. ``stream`` runs the Generate stream on the decode worker with first-token and
inter-token timeouts. Cancelling ``place`` aborts the prefill on its worker; closing ``stream`` before
the finished chunk aborts the decode. Routing, latency and handoff metrics are recorded here; request
outcomes by the front end's facade (``orchestrator.frontend``). The HTTP layer owns text, chat templates
and SSE. Failures raise ``NoHealthyWorker`` or ``WorkerError`` (``orchestrator.errors``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from orchestrator.config import ServerConfig
from orchestrator.errors import NoHealthyWorker, WorkerError
from orchestrator.metrics import Metrics
from orchestrator.pools.pool import WorkerHandle, WorkerPool
from orchestrator.scheduler.decision import NoEligibleWorker
from orchestrator.scheduler.request import RouteRequest, WorkerState
from orchestrator.scheduler.router import Router
from protocol.types import GenerateCall, KVHandoff, PrefillCall, SamplingSpec, TokenChunk

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlowRequest:
    request_id: str
    prompt: tuple[int, ...]
    sampling: SamplingSpec
    cache_salt: str | None = None
    session_key: str | None = None


@dataclass(frozen=True)
class Placement:
    """Where a request runs. ``prefill_worker`` is None when the decode worker prefills locally."""

    decode_worker: str
    prefill_worker: str | None
    route_reason: str
    handoff: KVHandoff | None
    predicted_cached_tokens: int
    started: float


def worker_state(handle: WorkerHandle, queue_bound: int) -> WorkerState:
    """The router's frozen view of a worker: engine figures plus the orchestrator's own in-flight count
    (so requests dispatched since the last load report already count)."""
    load = handle.load
    waiting = max(load.waiting, handle.in_flight - load.running)
    return WorkerState(worker_id=handle.worker_id, host=handle.host, healthy=handle.healthy,
                       running=load.running, waiting=waiting, kv_usage=load.kv_usage,
                       queued_prefill_tokens=handle.queued_prefill_tokens, queue_bound=queue_bound)


class RequestFlow:
    def __init__(self, *, router: Router, prefill: WorkerPool | None, decode: WorkerPool, metrics: Metrics,
                 server: ServerConfig, prefill_policy: str, decode_policy: str, kv_bytes_per_token: int) -> None:
        self._router = router
        self._prefill = prefill
        self._decode = decode
        self._metrics = metrics
        self._server = server
        self._prefill_policy = prefill_policy
        self._decode_policy = decode_policy
        self._kv_bytes_per_token = kv_bytes_per_token

    def _states(self, pool: WorkerPool | None, exclude: set[str] = frozenset()) -> list[WorkerState]:  # type: ignore[assignment]
        if pool is None:
            return []
        return [worker_state(h, pool.queue_bound) for h in pool if h.worker_id not in exclude]

    async def place(self, req: FlowRequest) -> Placement:
        started = time.perf_counter()
        route = self._router.make_request(req.prompt, cache_salt=req.cache_salt, session_key=req.session_key,
                                          request_id=req.request_id, kv_bytes_per_token=self._kv_bytes_per_token)
        prefill_states = self._states(self._prefill)
        decode_states = self._states(self._decode)
        if not any(s.healthy for s in decode_states):
            raise NoHealthyWorker("no healthy decode worker")
        match = self._router.match(route)
        remote = self._prefill is not None and len(self._prefill) > 0
        local_reason = "local"
        if remote:
            plan = self._router.plan(route, prefill_states, decode_states, match=match)
            remote = plan.mode == "remote"
            if not remote:
                local_reason = plan.reason  # short_prompt or prefill_saturated
                self._metrics.decisions.labels("prefill", self._prefill_policy, plan.reason).inc()
        if not remote and self._prefill is None:
            # Colocated pool: one worker prefills and decodes, placed with the prefix-aware pipeline.
            try:
                decision = self._router.route_prefill(route, decode_states, match=match, now=time.monotonic())
            except NoEligibleWorker:
                raise NoHealthyWorker("no healthy worker") from None
            self._metrics.decisions.labels("colocated", self._prefill_policy, decision.reason).inc()
            return Placement(decision.worker_id, None, decision.reason, None,
                             self._predicted(route, decision.matched_blocks), started)
        if not remote:
            decision = self._route_decode(route, None)
            return Placement(decision.worker_id, None, local_reason, None,
                             self._predicted(route, match.get(decision.worker_id, 0)), started)
        handoff, prefill_id, reason, matched = await self._prefill_with_retry(req, route, match)
        decision = self._route_decode(route, self._prefill.get(prefill_id).host if self._prefill else None)
        return Placement(decision.worker_id, prefill_id, reason, handoff, self._predicted(route, matched), started)

    def _predicted(self, route: RouteRequest, matched_blocks: int) -> int:
        """Cached tokens the engine should report: vLLM always recomputes the last prompt token, so at
        most the full blocks of the first ``prompt_tokens - 1`` tokens can be hits."""
        usable = max(0, route.prompt_tokens - 1) // route.block_size
        tokens = min(matched_blocks, usable) * route.block_size
        self._metrics.cached_tokens.labels("predicted").inc(tokens)
        return tokens

    def _route_decode(self, route: RouteRequest, source_host: str | None):  # type: ignore[no-untyped-def]
        try:
            decision = self._router.route_decode(route, self._states(self._decode), source_host=source_host)
        except NoEligibleWorker:
            raise NoHealthyWorker("no healthy decode worker") from None
        self._metrics.decisions.labels("decode", self._decode_policy, decision.reason).inc()
        return decision

    async def _prefill_with_retry(self, req: FlowRequest, route: RouteRequest,
                                  match: dict[str, int]) -> tuple[KVHandoff, str, str, int]:
        assert self._prefill is not None
        call = PrefillCall(request_id=f"{req.request_id}-p", prompt_token_ids=req.prompt, sampling=req.sampling,
                           cache_salt=req.cache_salt)
        tried: set[str] = set()
        last_error: WorkerError | None = None
        for _attempt in range(2):
            states = self._states(self._prefill, exclude=tried)
            try:
                decision = self._router.route_prefill(route, states, match=match, now=time.monotonic())
            except NoEligibleWorker:
                break
            self._metrics.decisions.labels("prefill", self._prefill_policy, decision.reason).inc()
            handle = self._prefill.get(decision.worker_id)
            handle.in_flight += 1
            handle.queued_prefill_tokens += route.uncached_tokens(decision.matched_blocks)
            t0 = time.perf_counter()
            try:
                handoff = await handle.client.prefill(call, self._server.prefill_timeout_s)
                self._metrics.prefill.observe(time.perf_counter() - t0)
                return handoff, decision.worker_id, decision.reason, decision.matched_blocks
            except WorkerError as exc:
                last_error = exc
                tried.add(decision.worker_id)
                log.warning("prefill of %s failed on %s: %s", req.request_id, decision.worker_id, exc)
                if not exc.retryable:
                    raise
            except asyncio.CancelledError:
                await self._abort_on(handle, call.request_id, "prefill")
                raise
            finally:
                handle.in_flight -= 1
                handle.queued_prefill_tokens -= route.uncached_tokens(decision.matched_blocks)
        if last_error is not None:
            raise last_error
        raise NoHealthyWorker("no healthy prefill worker")

    async def stream(self, req: FlowRequest, placement: Placement) -> AsyncGenerator[TokenChunk, None]:
        """Decode chunks; records TTFT/ITL/TPOT/E2E and handoff figures. Closing early aborts."""
        handle = self._decode.get(placement.decode_worker)
        handle.in_flight += 1
        handoff = placement.handoff
        call = GenerateCall(request_id=f"{req.request_id}-d", prompt_token_ids=req.prompt, sampling=req.sampling,
                            cache_salt=req.cache_salt, handoff=handoff)
        first_at: float | None = None
        last_at = placement.started
        handoff_at = time.perf_counter()
        out_tokens = 0
        finished = False
        try:
            async for chunk in handle.client.generate(
                call, self._server.first_token_timeout_s, self._server.inter_token_timeout_s,
            ):
                now = time.perf_counter()
                if chunk.token_ids:
                    if first_at is None:
                        first_at = now
                        self._metrics.ttft.observe(now - placement.started)
                        if handoff is not None:
                            self._record_handoff(handoff, now - handoff_at)
                    else:
                        self._metrics.itl.observe(now - last_at)
                    last_at = now
                    out_tokens += len(chunk.token_ids)
                finished = chunk.finished
                yield chunk
        finally:
            handle.in_flight -= 1
            # Recorded here: the caller closes this generator right after the finished chunk (or on a
            # stop string), so code after the loop would never run.
            end = time.perf_counter()
            if first_at is not None:
                self._metrics.e2e.observe(end - placement.started)
                if out_tokens > 1:
                    self._metrics.tpot.observe((end - first_at) / (out_tokens - 1))
            self._metrics.tokens.labels("generated").inc(out_tokens)
            self._metrics.tokens.labels("prompt").inc(len(req.prompt))
            if not finished:
                await self._abort_on(handle, call.request_id, "decode")
                if handoff is not None and first_at is None:
                    self._metrics.abandoned_leases.inc()

    def _record_handoff(self, handoff: KVHandoff, seconds: float) -> None:
        self._metrics.handoff_latency.observe(seconds)
        self._metrics.handoff_blocks.inc(handoff.num_blocks)
        self._metrics.handoff_bytes.observe(handoff.prompt_tokens * self._kv_bytes_per_token)

    def observe_cached(self, tokens: int) -> None:
        self._metrics.cached_tokens.labels("observed").inc(tokens)

    async def _abort_on(self, handle: WorkerHandle, request_id: str, role: str) -> None:
        self._metrics.aborts.labels(role).inc()
        with contextlib.suppress(Exception):
            await asyncio.shield(handle.client.abort(request_id))
