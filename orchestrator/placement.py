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
    lora: str | None = None  # the LoRA adapter the request names as its model (None: the base model)


class Seat:
    """A placement's claim on its decode worker, from routing to the end of the decode: one unit of the
    worker's ``in_flight``, and, when the decode worker prefills the prompt itself (colocated, local or
    recompute placements), ``prefill_tokens`` of its ``queued_prefill_tokens`` until the first token
    (``prefilled``). Placements made meanwhile already see both (``worker_state``), as they see a prefill
    worker's queue during a Prefill RPC. Owned by the flow; ``streamed`` is set once the decode stream
    starts. With a ``source`` (the prefill worker holding the request's handoff), the seat is also one of
    its ``handoffs_out`` until the first token (the handoff was read) or the end, so a draining prefill
    worker is not stopped under a pull. ``prefilled`` and ``release`` are idempotent and ``release``
    implies ``prefilled``, so each increment is undone exactly once whichever way the request ends."""

    def __init__(self, handle: WorkerHandle, prefill_tokens: int = 0, source: WorkerHandle | None = None) -> None:
        self._handle = handle
        self.held = True
        self.streamed = False
        self._prefill_tokens = max(0, prefill_tokens)
        self._source = source
        handle.in_flight += 1
        handle.queued_prefill_tokens += self._prefill_tokens
        if source is not None:
            source.handoffs_out += 1

    def prefilled(self) -> None:
        """The prompt work is over (first token out, or the decode ended): drop it from the worker's queue,
        and the handoff from its prefill worker's."""
        if self._prefill_tokens:
            self._handle.queued_prefill_tokens -= self._prefill_tokens
            self._prefill_tokens = 0
        if self._source is not None:
            self._source.handoffs_out -= 1
            self._source = None

    def release(self) -> None:
        self.prefilled()
        if self.held:
            self.held = False
            self._handle.in_flight -= 1


@dataclass(frozen=True)
class Placement:
    """Where a request runs. ``prefill_worker`` is None when the decode worker prefills locally;
    ``prefill_attempt`` tags the prefill's worker-side request id ("" first, "r"... for a prefill retry)."""

    decode_worker: str
    prefill_worker: str | None
    route_reason: str
    handoff: KVHandoff | None
    predicted_cached_tokens: int
    started: float
    seat: Seat
    prefill_attempt: str = ""
