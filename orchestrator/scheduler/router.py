"""The scheduler's front door for the request flow: hash a prompt once, then place its prefill and its
decode. Holds the prefix index and one pipeline per pool; does no I/O and reads no clock (``now`` is
passed in by the caller)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from .decision import Decision, NoEligibleWorker
from .disagg_policy import DisaggDecision, DisaggPolicy
from .hashing import TokenIds, block_hash_list, make_salt
from .links import LinkTable
from .pipeline import Pipeline
from .request import RouteRequest, WorkerState


class PrefixMatcher(Protocol):
    """What the router needs of an index: ``PrefixIndex`` (events) or ``ApproxPrefixIndex`` (guessing)."""

    def match(self, block_hashes: Sequence[int], *, now: float | None = None) -> dict[str, int]: ...

    def observe_route(self, worker_id: str, block_hashes: Sequence[int], now: float) -> None: ...


class Router:
    """Owns nothing but references: the index is shared with the event consumer that feeds it (which must
    run on the same thread or under the same lock). ``route_prefill`` tells the index where the prompt
    went (a no-op for the event-fed index). Pipelines raise ``NoEligibleWorker`` when a pool is empty."""

    def __init__(self, *, model: str, block_size: int, index: PrefixMatcher, prefill: Pipeline,
                 decode: Pipeline, disagg: DisaggPolicy | None = None) -> None:
        self.model = model
        self.block_size = block_size
        self.index = index
        self.prefill = prefill
        self.decode = decode
        self.disagg = disagg or DisaggPolicy()

    def make_request(self, token_ids: TokenIds, *, cache_salt: str | None = None,
                     session_key: str | None = None, request_id: str = "",
                     kv_bytes_per_token: int = 0, lora: str | None = None) -> RouteRequest:
        """Hash the prompt (the only per-token work of a decision), salted with the tenant's ``cache_salt``
        and the LoRA adapter ``lora`` (None: the base model). Raises ``ValueError`` on bad ids."""
        hashes = block_hash_list(token_ids, self.block_size, make_salt(self.model, cache_salt, lora))
        return RouteRequest(tuple(hashes), len(token_ids), self.block_size, session_key=session_key,
                            request_id=request_id, kv_bytes_per_token=kv_bytes_per_token)

    def match(self, request: RouteRequest, *, now: float | None = None) -> dict[str, int]:
        return self.index.match(request.block_hashes, now=now)

    def plan(self, request: RouteRequest, prefill_workers: Sequence[WorkerState],
             decode_workers: Sequence[WorkerState], *, match: Mapping[str, int] | None = None,
             now: float | None = None) -> DisaggDecision:
        """Remote (disaggregated) or local prefill for this request, each priced with the cache it would
        use. When the policy says local is possible, the decode worker a local prefill would run on is
        chosen here (``route_local``) and given to the policy; a local answer carries it (``.local``:
        seat the request there, do not route again), and for a remote one the decode picker is rewound,
        so every request moves the decode picker once."""
        match = self.match(request, now=now) if match is None else match
        if not self.disagg.local_possible(request, match, prefill_workers, decode_workers):
            return self.disagg.decide(request, match, prefill_workers, decode_workers)
        saved = self.decode.checkpoint()
        try:
            local: Decision | None = self.route_local(request, decode_workers, match)
        except NoEligibleWorker:
            local = None
        decision = self.disagg.decide(request, match, prefill_workers, decode_workers, local)
        if decision.mode != "local":
            self.decode.rewind(saved)
        return decision

    def route_local(self, request: RouteRequest, workers: Sequence[WorkerState],
                    match: Mapping[str, int]) -> Decision:
        """Pick the decode worker that prefills ``request`` itself: the decode pipeline with the index
        ``match`` and no ``source_host``, so prefix-aware scorers (``local_prefill``) prefer a worker that
        holds the prompt. ``Decision.matched_blocks`` is that worker's own cached prefix."""
        return self.decode.route(replace(request, source_host=None), workers, match)

    def route_prefill(self, request: RouteRequest, workers: Sequence[WorkerState], *,
                      match: Mapping[str, int] | None = None, now: float = 0.0) -> Decision:
        """Pick the prefill worker and record the route with the index."""
        match = self.match(request, now=now) if match is None else match
        decision = self.prefill.route(request, workers, match)
        self.index.observe_route(decision.worker_id, request.block_hashes, now)
        return decision

    def route_decode(self, request: RouteRequest, workers: Sequence[WorkerState], *,
                     source_host: str | None = None, links: LinkTable | None = None) -> Decision:
        """Pick the decode worker for KV prefilled elsewhere; ``source_host`` (the prefill worker's host)
        prices the KV transfer over ``links`` (a snapshot of the measured table; None: the configured
        one). The decode worker's own cache is not consulted (``route_local`` does)."""
        if source_host is not None:
            request = replace(request, source_host=source_host)
        if links is not None:
            request = replace(request, links=links)
        return self.decode.route(request, workers, {})
