"""Conditional disaggregation: run a prompt's prefill on a prefill worker (``remote``) or let the decode
worker prefill it itself (``local``).

Local wins when the uncached part of the prompt is too short to repay a KV transfer (``short_prompt``), or
when every prefill worker is saturated while a decode worker has room (``prefill_saturated``); otherwise
the prompt is disaggregated (``disaggregated``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .request import RouteRequest, WorkerState

SHORT_PROMPT = "short_prompt"
PREFILL_SATURATED = "prefill_saturated"
DISAGGREGATED = "disaggregated"


@dataclass(frozen=True)
class DisaggDecision:
    """``mode`` is where the prefill runs; ``uncached_tokens`` is the prompt work left after the best
    prefill worker's cached prefix; ``reason`` is one of the three labels above."""

    mode: Literal["remote", "local"]
    reason: str
    uncached_tokens: int


class DisaggPolicy(BaseModel):
    """Thresholds for ``decide``; frozen, unknown keys rejected. ``min_remote_tokens``: prompts whose
    uncached part is shorter than this prefill locally (0 disables the rule)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_remote_tokens: int = Field(default=256, ge=0)
    local_when_prefill_saturated: bool = True

    def decide(self, request: RouteRequest, match: Mapping[str, int],
               prefill: Sequence[WorkerState], decode: Sequence[WorkerState]) -> DisaggDecision:
        """Pure: reads its arguments only. Unhealthy workers count as neither saturated nor roomy: a pool
        with no healthy prefill worker counts as saturated."""
        best = max((match.get(w.worker_id, 0) for w in prefill if w.healthy), default=0)
        uncached = request.uncached_tokens(best)
        if uncached < self.min_remote_tokens:
            return DisaggDecision("local", SHORT_PROMPT, uncached)
        if self.local_when_prefill_saturated:
            prefill_full = not any(w.healthy and w.has_room for w in prefill)
            decode_room = any(w.healthy and w.has_room for w in decode)
            if prefill_full and decode_room:
                return DisaggDecision("local", PREFILL_SATURATED, uncached)
        return DisaggDecision("remote", DISAGGREGATED, uncached)
