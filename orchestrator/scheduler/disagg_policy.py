"""Conditional disaggregation: run a prompt's prefill on a prefill worker (``remote``) or let a decode
worker prefill it itself (``local``).

The two paths are priced against the caches they would actually use:

- remote: the best healthy prefill worker's cached prefix (``remote_uncached_tokens`` are left to
  prefill), then a KV transfer of the whole prompt to the decode worker;
- local: the decode worker a local prefill would run on (``local``: the decode pool's pick for this
  request with the index match, see ``Router.plan``), and *that* worker's own cached prefix
  (``local_uncached_tokens``).

Local wins when the local work is too short to repay a KV transfer (``short_prompt``: fewer than
``min_remote_tokens`` uncached tokens on the local worker), or when every prefill worker is saturated while
the local worker has room (``prefill_saturated``, a load valve); otherwise the prompt is disaggregated
(``disaggregated``). So a decode worker never recomputes ``min_remote_tokens`` or more tokens to save a
transfer: a prompt a prefill worker holds but the local decode worker does not goes remote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .decision import Decision
from .request import RouteRequest, WorkerState

SHORT_PROMPT = "short_prompt"
PREFILL_SATURATED = "prefill_saturated"
DISAGGREGATED = "disaggregated"


@dataclass(frozen=True)
class DisaggDecision:
    """``mode`` is where the prefill runs; ``reason`` is one of the three labels above.
    ``remote_uncached_tokens``: prompt tokens left after the best healthy prefill worker's cached prefix.
    ``local_uncached_tokens``: tokens left after the local candidate's own cached prefix (None when no
    local candidate was given). ``local``: the decode worker that prefills, set exactly when ``mode`` is
    ``local`` (the flow seats the request there)."""

    mode: Literal["remote", "local"]
    reason: str
    remote_uncached_tokens: int
    local_uncached_tokens: int | None = None
    local: Decision | None = None

    @property
    def uncached_tokens(self) -> int:
        """Prefill work on the chosen path."""
        if self.mode == "local" and self.local_uncached_tokens is not None:
            return self.local_uncached_tokens
        return self.remote_uncached_tokens


class DisaggPolicy(BaseModel):
    """Thresholds for ``decide``; frozen, unknown keys rejected.

    ``min_remote_tokens``: the least prefill work worth a KV transfer. A prompt whose uncached part *on the
    local decode worker* is shorter than this prefills there (0 disables the rule). It is never compared
    with the prefill worker's uncached part alone: a long prompt cached on a prefill worker only is
    disaggregated. ``local_when_prefill_saturated``: prefill locally when no healthy prefill worker has
    room and the local decode worker has (this valve may recompute a prefix a prefill worker holds: the
    remote path then queues behind a full prefill pool). ``first_token``: which worker's token opens a
    disaggregated answer. ``prefill`` (default) sends the prefill's sampled token as soon as the prefill
    returns wherever that gives the same tokens (``orchestrator.lead_token``), and the decode worker
    continues after it: the handoff leaves the time to first token and one decode step leaves the answer,
    but the gap before the second token holds the handoff. ``decode`` waits for the decode worker to pull
    the KV and sample the first token again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_remote_tokens: int = Field(default=256, ge=0)
    local_when_prefill_saturated: bool = True
    first_token: Literal["prefill", "decode"] = "prefill"

    def local_possible(self, request: RouteRequest, match: Mapping[str, int],
                       prefill: Sequence[WorkerState], decode: Sequence[WorkerState]) -> bool:
        """Whether some decode worker could be given ``local`` by ``decide``: a caller may skip choosing a
        local candidate when this is False (``decide(..., local=None)`` then gives the same answer as
        with any candidate). Pure."""
        if not any(w.healthy for w in decode):
            return False
        best_local = max((match.get(w.worker_id, 0) for w in decode), default=0)
        if request.uncached_tokens(best_local) < self.min_remote_tokens:
            return True
        return self.local_when_prefill_saturated and _has_room(decode) and not _has_room(prefill)

    def decide(self, request: RouteRequest, match: Mapping[str, int], prefill: Sequence[WorkerState],
               decode: Sequence[WorkerState], local: Decision | None = None) -> DisaggDecision:
        """Pure: reads its arguments only. ``local`` is the decode worker a local prefill would use (its
        ``matched_blocks`` are its own cached prefix) or None; the answer is remote when it is None or not
        a healthy worker of ``decode``. Unhealthy workers count as neither saturated nor roomy: a pool with
        no healthy prefill worker counts as saturated."""
        best = max((match.get(w.worker_id, 0) for w in prefill if w.healthy), default=0)
        remote = request.uncached_tokens(best)
        state = next((w for w in decode if local is not None and w.worker_id == local.worker_id), None)
        if local is None or state is None or not state.healthy:
            return DisaggDecision("remote", DISAGGREGATED, remote)
        here = request.uncached_tokens(local.matched_blocks)
        if here < self.min_remote_tokens:
            return DisaggDecision("local", SHORT_PROMPT, remote, here, local)
        if self.local_when_prefill_saturated and not _has_room(prefill) and state.has_room:
            return DisaggDecision("local", PREFILL_SATURATED, remote, here, local)
        return DisaggDecision("remote", DISAGGREGATED, remote, here)


def _has_room(workers: Sequence[WorkerState]) -> bool:
    return any(w.healthy and w.has_room for w in workers)
