"""Built-in prefill/decode scorers. Each returns one score in [0, 1] per candidate (higher is better) or
abstains with None. Stateless apart from the session scorer's ring memo. Registered in ``registry``."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from .plugin import Candidates, PluginEnv, PluginParams, Scorer
from .session_ring import HashRing, bounded_load_choice


class LeastLoadedScorer(Scorer):
    """``1 - load / max load`` with load = running + waiting (all 1 when every worker is idle)."""

    labels = frozenset({"least_loaded"})

    def score(self, cands: Candidates) -> Sequence[float]:
        loads = [w.load for w in cands.workers]
        top = max(loads)
        return [1.0 - load / top for load in loads] if top else [1.0] * len(loads)


class KvUsageScorer(Scorer):
    """``1 - kv_usage``: prefer the worker with the most free KV cache."""

    labels = frozenset({"kv_usage"})

    def score(self, cands: Candidates) -> Sequence[float]:
        return [1.0 - min(1.0, max(0.0, w.kv_usage)) for w in cands.workers]


class PrefixScorer(Scorer):
    """Fraction of the prompt's blocks the worker already holds. Abstains for a prompt without a full
    block. Reason: ``prefix_hit`` when the chosen worker holds at least one block, else ``prefix_miss``."""

    labels = frozenset({"prefix_hit", "prefix_miss"})

    def score(self, cands: Candidates) -> Sequence[float] | None:
        total = cands.request.num_blocks
        if not total:
            return None
        return [cands.matched(w) / total for w in cands.workers]

    def reason(self, cands: Candidates, chosen: int) -> str:
        return "prefix_hit" if cands.matched(cands.workers[chosen]) else "prefix_miss"


class SessionScorer(Scorer):
    """1 for the worker that consistent hashing with bounded load gives the session key, 0 for the rest.
    Abstains when the request has no session key. Keeps a small memo of rings per candidate set."""

    labels = frozenset({"session_affinity"})

    class Params(PluginParams):
        vnodes: int = Field(default=64, ge=1, le=4096)
        load_factor: float = Field(default=1.25, ge=1.0)

    params: Params

    def __init__(self, params: Params, env: PluginEnv) -> None:
        super().__init__(params, env)
        self._rings: dict[tuple[str, ...], HashRing] = {}

    def _ring(self, ids: tuple[str, ...]) -> HashRing:
        ring = self._rings.get(ids)
        if ring is None:
            if len(self._rings) >= 8:
                self._rings.clear()
            ring = self._rings[ids] = HashRing(ids, self.params.vnodes)
        return ring

    def score(self, cands: Candidates) -> Sequence[float] | None:
        key = cands.request.session_key
        if key is None:
            return None
        loads = {w.worker_id: w.load for w in cands.workers}
        target = bounded_load_choice(self._ring(tuple(sorted(loads))), key, loads, self.params.load_factor)
        return [1.0 if w.worker_id == target else 0.0 for w in cands.workers]


class KvAwareScorer(Scorer):
    """Estimated time to first token: ``overhead + (queued prefill tokens + uncached prompt tokens) /
    prefill tokens per second``, where uncached tokens subtract the worker's matched prefix. Score = best
    estimate / this estimate, in (0, 1]. A worker with no measured speed yet (just started, restarted or
    added by scaling) is assumed as fast as the fastest measured candidate, so it gets tried and measured
    rather than starved by a pessimistic guess; with no measurement at all, ``default_tokens_per_s``."""

    labels = frozenset({"kv_aware"})

    class Params(PluginParams):
        default_tokens_per_s: float = Field(default=10_000.0, gt=0)
        overhead_s: float = Field(default=0.001, gt=0)

    params: Params

    def estimates(self, cands: Candidates) -> list[float]:
        """Estimated seconds to first token on each candidate."""
        req, params = cands.request, self.params
        unknown = max((w.prefill_tokens_per_s for w in cands.workers), default=0.0) or params.default_tokens_per_s
        return [params.overhead_s + (w.queued_prefill_tokens + req.uncached_tokens(cands.matched(w)))
                / (w.prefill_tokens_per_s or unknown) for w in cands.workers]

    def score(self, cands: Candidates) -> Sequence[float] | None:
        times = self.estimates(cands)
        best = min(times)
        return [best / t for t in times]
