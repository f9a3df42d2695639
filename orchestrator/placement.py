"""The records of one request's way through the pools (``orchestrator.flow``): what is asked
(``FlowRequest``), where it runs (``Placement``) and its claim on the decode worker (``Seat``)."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.pools.pool import WorkerHandle
from protocol.types import KVHandoff, SamplingSpec


@dataclass(frozen=True)
class FlowRequest:
    request_id: str
    prompt: tuple[int, ...]
    sampling: SamplingSpec
    cache_salt: str | None = None
    session_key: str | None = None


class Seat:
    """A placement's claim on its decode worker, from routing to the end of the decode: one unit of the
    worker's ``in_flight``, so placements made meanwhile already see it (``worker_state``). Owned by the
    flow; ``release`` is idempotent; ``streamed`` is set once the decode stream starts."""

    def __init__(self, handle: WorkerHandle) -> None:
        self._handle = handle
        self.held = True
        self.streamed = False
        handle.in_flight += 1

    def release(self) -> None:
        if self.held:
            self.held = False
            self._handle.in_flight -= 1


@dataclass(frozen=True)
class Placement:
    """Where a request runs. ``prefill_worker`` is None when the decode worker prefills locally."""

    decode_worker: str
    prefill_worker: str | None
    route_reason: str
    handoff: KVHandoff | None
    predicted_cached_tokens: int
    started: float
    seat: Seat
