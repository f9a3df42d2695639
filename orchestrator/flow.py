"""The request's path through the pools: place (route + prefill), then stream (decode), then release.

``place`` hashes the prompt once and plans remote or local prefill, each priced with the cache it would use.
Remote: a prefill worker (retried once on another when one fails) runs the Prefill RPC, then a decode worker
is picked, priced by the KV transfer. Local or colocated: the chosen worker prefills itself, its uncached
tokens queued there until the first token. Either way the request takes a seat on its decode worker at once
(``Seat``). ``stream`` runs the Generate stream on the decode worker with first-token and inter-token
timeouts; a handoff the decode worker cannot read is dealt with by ``transfer.on_pull_failure`` (retry on
another pair, recompute on the decode worker, or fail), once.
Cancelling ``place`` aborts the prefill on its worker; closing ``stream`` before the finished chunk aborts
the decode; ``release`` ends a placement that was never streamed. Either frees a handoff the decode
worker never read on its prefill worker at once (``orchestrator.handoff_release``). Routing metrics are
recorded here; latencies, handoffs, link samples and prefill speeds by ``orchestrator.flow_meter``; request
outcomes by the front end's facade (``orchestrator.frontend``). Decode placement prices the KV transfer
with a snapshot of the measured links. The HTTP layer owns text, chat templates and SSE. Failures raise
``NoHealthyWorker`` or ``WorkerError`` (``orchestrator.errors``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Collection
from dataclasses import replace

from orchestrator.config import ServerConfig
from orchestrator.errors import NoHealthyWorker, WorkerError
from orchestrator.flow_meter import FlowMeter, StreamMeter
from orchestrator.handoff_release import HandoffReleaser, abort_on
from orchestrator.handoff_watch import until_source_lost
from orchestrator.lead_token import continuation, lead_chunk
from orchestrator.metrics import Metrics
from orchestrator.placement import FlowRequest, Placement, Seat
from orchestrator.pools.pool import WorkerHandle, WorkerPool
from orchestrator.scheduler.decision import Decision, NoEligibleWorker
from orchestrator.scheduler.link_meter import MeasuredLinks
from orchestrator.scheduler.links import LinkTable
from orchestrator.scheduler.request import RouteRequest, WorkerState
from orchestrator.scheduler.router import Router
from protocol.types import GenerateCall, KVHandoff, PrefillCall, TokenChunk

log = logging.getLogger(__name__)


def worker_state(handle: WorkerHandle, queue_bound: int) -> WorkerState:
    """The router's frozen view of a worker: engine figures plus the orchestrator's own in-flight count
    (so requests dispatched since the last load report already count) and its measured prefill speed
    (0 until measured). A draining worker counts as unhealthy: it takes no new requests."""
    load = handle.load
    waiting = max(load.waiting, handle.in_flight - load.running)
    return WorkerState(worker_id=handle.worker_id, host=handle.host, healthy=handle.routable,
                       running=load.running, waiting=waiting, kv_usage=load.kv_usage,
                       queued_prefill_tokens=handle.queued_prefill_tokens, queue_bound=queue_bound,
                       prefill_tokens_per_s=handle.prefill_speed.tokens_per_s)


class RequestFlow:
    def __init__(self, *, router: Router, prefill: WorkerPool | None, decode: WorkerPool, metrics: Metrics,
                 server: ServerConfig, prefill_policy: str, decode_policy: str, kv_bytes_per_token: int,
                 on_pull_failure: str = "retry", links: MeasuredLinks | None = None,
                 lead_token: bool = True) -> None:
        """``links``: the measured link table decode placement reads and handoffs feed (a fresh one over
        the default priors when None). ``lead_token``: open answers with the prefill's first token where
        ``orchestrator.lead_token`` allows (``disaggregation.first_token: prefill``)."""
        self._router = router
        self._prefill = prefill
        self._decode = decode
        self._metrics = metrics
        self._server = server
        self._prefill_policy = prefill_policy
        self._decode_policy = decode_policy
        self._kv_bytes_per_token = kv_bytes_per_token
        self._on_pull_failure = on_pull_failure
        self._lead_token = lead_token
        self.links = links if links is not None else MeasuredLinks(LinkTable())
        self._meter = FlowMeter(metrics, self.links, kv_bytes_per_token)
        self._releaser = HandoffReleaser(prefill, decode, metrics, server)

    def _states(self, pool: WorkerPool, exclude: Collection[str] = ()) -> list[WorkerState]:
        return [worker_state(h, pool.queue_bound) for h in pool if h.worker_id not in exclude]

    async def place(self, req: FlowRequest) -> Placement:
        started = time.perf_counter()
        route = self._make_route(req)
        decode_states = self._states(self._decode)
        if not any(s.healthy for s in decode_states):
            raise NoHealthyWorker("no healthy decode worker")
        match = self._router.match(route)
        if self._prefill is None:
            # Colocated pool: one worker prefills and decodes, placed with the prefix-aware pipeline.
            try:
                decision = self._router.route_prefill(route, decode_states, match=match, now=time.monotonic())
            except NoEligibleWorker:
                raise NoHealthyWorker("no healthy worker") from None
            self._metrics.decisions.labels("colocated", self._prefill_policy, decision.reason).inc()
            return self._place_local(route, decision, decision.reason, started)
        if len(self._prefill) == 0:
            return self._place_local(route, self._route_local(route, decode_states, match), "local", started)
        plan = self._router.plan(route, self._states(self._prefill), decode_states, match=match)
        if plan.local is None:
            return await self._place_remote(req, route, match, started)
        # Local prefill (short_prompt or prefill_saturated) on the decode worker the plan priced.
        self._metrics.decisions.labels("prefill", self._prefill_policy, plan.reason).inc()
        self._metrics.decisions.labels("decode", self._decode_policy, plan.local.reason).inc()
        return self._place_local(route, plan.local, plan.reason, started)

    def _place_local(self, route: RouteRequest, decision: Decision, reason: str, started: float) -> Placement:
        """Seat the request on ``decision``'s worker, which prefills the prompt itself: the tokens its own
        cache lacks count in its ``queued_prefill_tokens`` until the first token (``Seat``)."""
        return Placement(decision.worker_id, None, reason, None, self._predicted(route, decision.matched_blocks),
                         started, self._seat(decision.worker_id, route.uncached_tokens(decision.matched_blocks)))

    async def _place_remote(self, req: FlowRequest, route: RouteRequest, match: dict[str, int], started: float,
                            attempt: str = "", avoid_decode: str | None = None) -> Placement:
        """Prefill on a prefill worker, then seat the request on a decode worker (another than
        ``avoid_decode`` when one is healthy). ``attempt`` tags the worker-side request ids of a retry."""
        assert self._prefill is not None
        handoff, prefill_id, reason, matched = await self._prefill_with_retry(req, route, match, attempt)
        source = self._prefill.get(prefill_id)
        decision = self._route_decode(route, source.host, avoid=avoid_decode)
        return Placement(decision.worker_id, prefill_id, reason, handoff, self._predicted(route, matched), started,
                         self._seat(decision.worker_id, source=source), attempt)

    def _make_route(self, req: FlowRequest) -> RouteRequest:
        return self._router.make_request(req.prompt, cache_salt=req.cache_salt, session_key=req.session_key,
                                         request_id=req.request_id, kv_bytes_per_token=self._kv_bytes_per_token,
                                         lora=req.lora)

    def _seat(self, decode_worker: str, prefill_tokens: int = 0, source: WorkerHandle | None = None) -> Seat:
        return Seat(self._decode.get(decode_worker), prefill_tokens, source)

    def _predicted(self, route: RouteRequest, matched_blocks: int) -> int:
        """Cached tokens the engine should report: vLLM always recomputes the last prompt token, so at
        most the full blocks of the first ``prompt_tokens - 1`` tokens can be hits."""
        usable = max(0, route.prompt_tokens - 1) // route.block_size
        tokens = min(matched_blocks, usable) * route.block_size
        self._metrics.cached_tokens.labels("predicted").inc(tokens)
        return tokens

    def _route_decode(self, route: RouteRequest, source_host: str, avoid: str | None = None) -> Decision:
        try:
            try:
                states = self._states(self._decode, exclude={avoid} if avoid else set())
                decision = self._router.route_decode(route, states, source_host=source_host,
                                                     links=self.links.snapshot())
            except NoEligibleWorker:
                if avoid is None:
                    raise
                decision = self._router.route_decode(route, self._states(self._decode), source_host=source_host,
                                                     links=self.links.snapshot())
        except NoEligibleWorker:
            raise NoHealthyWorker("no healthy decode worker") from None
        self._metrics.decisions.labels("decode", self._decode_policy, decision.reason).inc()
        return decision

    def _route_local(self, route: RouteRequest, states: list[WorkerState], match: dict[str, int]) -> Decision:
        try:
            decision = self._router.route_local(route, states, match)
        except NoEligibleWorker:
            raise NoHealthyWorker("no healthy decode worker") from None
        self._metrics.decisions.labels("decode", self._decode_policy, decision.reason).inc()
        return decision

    async def _prefill_with_retry(self, req: FlowRequest, route: RouteRequest, match: dict[str, int],
                                  attempt: str = "") -> tuple[KVHandoff, str, str, int]:
        assert self._prefill is not None
        call = PrefillCall(request_id=_prefill_id(req.request_id, attempt), prompt_token_ids=req.prompt,
                           sampling=req.sampling, cache_salt=req.cache_salt, lora=req.lora)
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
            uncached = route.uncached_tokens(decision.matched_blocks)
            t0 = time.perf_counter()
            self._meter.prefill_started(handle, t0)
            handle.in_flight += 1
            handle.queued_prefill_tokens += uncached
            try:
                handoff = await handle.client.prefill(call, self._server.prefill_timeout_s)
                self._meter.prefill_ended(handle, t0, time.perf_counter(), uncached)
                return handoff, decision.worker_id, decision.reason, decision.matched_blocks
            except WorkerError as exc:
                self._meter.prefill_failed(handle, time.perf_counter())
                last_error = exc
                tried.add(decision.worker_id)
                if exc.unreachable:
                    self._mark_down(self._prefill, decision.worker_id)
                log.warning("prefill of %s failed on %s: %s", req.request_id, decision.worker_id, exc)
                if not exc.retryable:
                    raise
            except asyncio.CancelledError:
                self._meter.prefill_failed(handle, time.perf_counter())
                await abort_on(self._metrics, handle, call.request_id, "prefill")
                raise
            finally:
                handle.in_flight -= 1
                handle.queued_prefill_tokens -= uncached
        if last_error is not None:
            raise last_error
        raise NoHealthyWorker("no healthy prefill worker")

    async def stream(self, req: FlowRequest, placement: Placement) -> AsyncGenerator[TokenChunk, None]:
        """The answer's chunks; records TTFT/ITL/TPOT/E2E and handoff figures. Closing early aborts. Where
        ``orchestrator.lead_token`` allows, the prefill's first token opens the answer at once and the decode
        worker continues after it. A handoff the decode worker could not read (``WorkerError.void_reason``)
        before it sent a token is retried, recomputed or failed by ``on_pull_failure``, once; the retry's
        chunks follow on this same stream."""
        current = placement
        meter = StreamMeter(self._meter, placement)
        lead = lead_chunk(req.sampling, placement.handoff, self._router.block_size) if self._lead_token else None
        produced = reseated = voided = False
        try:
            if lead is not None:
                placement.seat.streamed = True
                meter.lead(lead, time.perf_counter())
                placement.seat.prefilled()
                read = False
                try:
                    yield lead
                    read = not lead.finished
                finally:
                    if not read:  # answered by the lead alone, or abandoned at it: no decode reads the handoff
                        await self._free_handoff(req, placement)
                if lead.finished:
                    return
            for attempt in ("", "r", "rr"):  # at most one reseat and one void handoff per request
                try:
                    async for chunk in self._decode_once(req, current, attempt, meter, lead):
                        produced = produced or bool(chunk.token_ids)
                        yield chunk
                    return
                except WorkerError as exc:
                    if produced:
                        raise
                    if exc.unreachable and not reseated:
                        # The decode worker is gone before it produced anything: another one reads the handoff.
                        reseated = True
                        self._mark_down(self._decode, current.decode_worker)
                        current.seat.release()
                        current = self._reseat(req, current)
                        continue
                    if exc.void_reason is None:
                        raise
                    action = "fail" if voided else self._on_pull_failure
                    voided = True
                    log.warning("%s: %s (%s)", req.request_id, exc, action)
                    if action == "fail":
                        self._metrics.void_handoffs.labels(exc.void_reason, "fail").inc()
                        raise
                    current.seat.release()
                    current = await self._replace(req, current, action, exc.void_reason, attempt + "r")
        finally:
            meter.close(time.perf_counter(), len(req.prompt))
            current.seat.release()

    def _reseat(self, req: FlowRequest, failed: Placement) -> Placement:
        """``failed``'s decode moved to another decode worker: it reads the same handoff, or prefills itself."""
        route = self._make_route(req)
        if failed.handoff is None or failed.prefill_worker is None or self._prefill is None:
            match = self._router.match(route)
            local = self._route_local(route, self._states(self._decode, exclude={failed.decode_worker}), match)
            return self._place_local(route, local, failed.route_reason, failed.started)
        source = self._prefill.find(failed.prefill_worker)
        decision = self._route_decode(route, source.host if source else "", avoid=failed.decode_worker)
        return replace(failed, decode_worker=decision.worker_id, seat=self._seat(decision.worker_id, source=source))

    @staticmethod
    def _mark_down(pool: WorkerPool | None, worker_id: str) -> None:
        """A worker that refused a connection takes no more requests until its pool monitor reaches it."""
        if pool is not None and worker_id in pool:
            pool.get(worker_id).healthy = False

    async def _replace(self, req: FlowRequest, failed: Placement, action: str, reason: str,
                       attempt: str) -> Placement:
        """Where the request runs after its handoff from ``failed`` proved void: ``retry`` prefills again
        (recomputing when no prefill worker can), ``recompute`` decodes on the same worker without a handoff."""
        route = self._make_route(req)
        match = self._router.match(route)
        if action == "retry" and self._prefill is not None and self._prefill.routable():
            self._metrics.void_handoffs.labels(reason, "retry").inc()
            return await self._place_remote(req, route, match, failed.started, attempt=attempt,
                                            avoid_decode=failed.decode_worker)
        self._metrics.void_handoffs.labels(reason, "recompute").inc()
        own = route.uncached_tokens(match.get(failed.decode_worker, 0))  # what its own cache lacks
        return Placement(failed.decode_worker, None, "recompute", None, 0, failed.started,
                         self._seat(failed.decode_worker, own))

    async def _decode_once(self, req: FlowRequest, placement: Placement, attempt: str, meter: StreamMeter,
                           lead: TokenChunk | None) -> AsyncGenerator[TokenChunk, None]:
        """One Generate stream on the placement's decode worker, continuing after ``lead`` when the answer
        opened with it; its chunks go through ``meter``. Closing it before the finished chunk aborts the
        decode and frees an unread handoff."""
        handle = self._decode.get(placement.decode_worker)
        placement.seat.streamed = True
        call = GenerateCall(request_id=f"{req.request_id}-d{attempt}", prompt_token_ids=req.prompt,
                            sampling=req.sampling, cache_salt=req.cache_salt, handoff=placement.handoff,
                            lora=req.lora)
        if lead is not None:
            call = continuation(call, lead)
        # The handoff is pulled from its prefill worker's host, or its own once that worker left its pool.
        source = self._prefill.find(placement.prefill_worker) if self._prefill and placement.prefill_worker else None
        source_host = None if placement.handoff is None else (source.host if source else placement.handoff.host)
        meter.sent(placement, handle.host, source_host, time.perf_counter())
        finished = False
        try:
            chunks = handle.client.generate(
                call, self._server.first_token_timeout_s, self._server.inter_token_timeout_s,
                deadline_s=self._server.request_timeout_s,  # no decode outlives the request, even unobserved
            )
            async for chunk in until_source_lost(chunks, source, placement.decode_worker):
                if meter.chunk(chunk, time.perf_counter()):
                    placement.seat.prefilled()
                finished = chunk.finished
                yield chunk
        finally:
            # Here, not after the loop: the caller closes this generator right after the finished chunk (or
            # on a stop string), so code after the loop would never run.
            if not finished:
                await abort_on(self._metrics, handle, call.request_id, "decode")
                if not meter.decode_started:
                    await self._free_handoff(req, placement)

    async def release(self, req: FlowRequest, placement: Placement) -> None:
        """End ``placement`` if its decode never started (the client left, or the answer failed before):
        give up its seat and free its handoff on the prefill worker. Idempotent; a no-op once streamed."""
        if placement.seat.held and not placement.seat.streamed:
            placement.seat.release()
            await self._free_handoff(req, placement)

    async def _free_handoff(self, req: FlowRequest, placement: Placement) -> None:
        """The decode side will never read ``placement``'s handoff: free it on its prefill worker now
        rather than at lease expiry (``orchestrator.handoff_release``)."""
        await self._releaser.release(req, placement, _prefill_id(req.request_id, placement.prefill_attempt))

    async def close(self) -> None:
        """Stop the background work this flow started (handoff release reads)."""
        await self._releaser.close()

    def observe_cached(self, tokens: int) -> None:
        self._metrics.cached_tokens.labels("observed").inc(tokens)


def _prefill_id(request_id: str, attempt: str) -> str:
    """The prefill worker's request id for ``request_id`` (``attempt`` "" first, "r" for the retry)."""
    return f"{request_id}-p{attempt}"
