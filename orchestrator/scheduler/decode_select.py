"""Decode placement's transfer-cost term: moving the prompt's KV from the prefill host costs
``prompt KV bytes / link bandwidth``; cheaper links score higher. Load terms come from the general
``least_loaded`` and ``kv_usage`` scorers, combined in the ``decode`` preset."""

from __future__ import annotations

from collections.abc import Sequence

from .plugin import Candidates, Scorer


class TransferCostScorer(Scorer):
    """Score = fastest transfer time / this worker's transfer time, in (0, 1]. Abstains when the request
    names no ``source_host`` or carries no KV bytes. Reads ``env.links``; stateless."""

    labels = frozenset({"transfer_cost"})

    def score(self, cands: Candidates) -> Sequence[float] | None:
        req = cands.request
        nbytes = req.prompt_tokens * req.kv_bytes_per_token
        if req.source_host is None or nbytes <= 0:
            return None
        links = self.env.links
        seconds = [links.transfer_seconds(nbytes, req.source_host, w.host) for w in cands.workers]
        best = min(seconds)
        return [best / s for s in seconds]
