"""Decode placement's own terms. ``transfer_cost``: moving the prompt's KV from the prefill host costs
``prompt KV bytes / link bandwidth``; cheaper links score higher. ``local_prefill``: when the decode worker
prefills the prompt itself, its own cached prefix and queued prefill work decide (the ``kv_aware``
estimate). Load terms come from the general ``least_loaded`` and ``kv_usage`` scorers, combined in the
``decode`` preset. Each abstains on the other kind of placement, so one profile serves both."""

from __future__ import annotations

from collections.abc import Sequence

from .plugin import Candidates, Scorer
from .scorers import KvAwareScorer


class TransferCostScorer(Scorer):
    """Score = fastest transfer time / this worker's transfer time, in (0, 1], each time the link's
    latency plus the prompt's KV bytes over its bandwidth. Abstains when the request names no
    ``source_host`` or carries no KV bytes. Reads the request's link snapshot (``RouteRequest.links``,
    measured), else ``env.links``; stateless."""

    labels = frozenset({"transfer_cost"})

    def score(self, cands: Candidates) -> Sequence[float] | None:
        req = cands.request
        nbytes = req.prompt_tokens * req.kv_bytes_per_token
        if req.source_host is None or nbytes <= 0:
            return None
        links = req.links if req.links is not None else self.env.links
        seconds = [links.transfer_seconds(nbytes, req.source_host, w.host) for w in cands.workers]
        best = min(seconds)
        return [best / s for s in seconds]


class LocalPrefillScorer(KvAwareScorer):
    """The ``kv_aware`` estimate (queued prefill tokens + tokens left after *this decode worker's* cached
    prefix, over its prefill speed) for a decode worker that prefills the prompt itself, so a worker that
    holds the prompt is preferred. Abstains when the request names a ``source_host``: the KV then comes
    from a prefill worker and no prompt work runs here. Reads the index match the caller passes
    (``Router.route_local``); stateless. Same ``Params`` as ``kv_aware``."""

    labels = frozenset({"local_prefill"})

    def score(self, cands: Candidates) -> Sequence[float] | None:
        if cands.request.source_host is not None:
            return None
        return super().score(cands)
