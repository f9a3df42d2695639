"""A pool profile at run time: filters -> weighted scorers -> one picker -> ``Decision``.

The saturation valve is part of every pipeline: if the pick is at or over its queue bound while another
candidate has room, the pick is redone among the candidates with room and labelled ``saturation_valve``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .decision import NO_PREFERENCE, SATURATION_VALVE, Decision, NoEligibleWorker
from .plugin import Candidates, Filter, Picker, Scorer
from .request import RouteRequest, WorkerState


@dataclass(frozen=True)
class WeightedScorer:
    scorer: Scorer
    weight: float


class Pipeline:
    """Runs one profile. Reads its inputs only; the picker's own state (round-robin counter, seeded RNG)
    is the only thing a call changes. Not thread-safe. No I/O."""

    def __init__(self, name: str, filters: Sequence[Filter], scorers: Sequence[WeightedScorer],
                 picker: Picker) -> None:
        self.name = name
        self.filters = tuple(filters)
        # Heaviest first: the first scorer that votes is the decision's leading voice (its reason).
        self.scorers = tuple(sorted((s for s in scorers if s.weight > 0), key=lambda s: -s.weight))
        self.picker = picker

    def route(self, request: RouteRequest, workers: Sequence[WorkerState],
              match: Mapping[str, int]) -> Decision:
        """Pick a worker for ``request``. ``match`` is the prefix index's answer for its hashes.

        Raises ``NoEligibleWorker`` when no worker passes the filters.
        """
        cands = self.candidates(request, workers, match)
        chosen, reason = self._choose(cands)
        if not cands.workers[chosen].has_room:
            roomy = tuple(w for w in cands.workers if w.has_room)
            if roomy:
                cands = Candidates(request, roomy, match)
                chosen, _ = self._choose(cands)
                reason = SATURATION_VALVE
        worker = cands.workers[chosen]
        return Decision(worker.worker_id, cands.matched(worker), reason)

    def checkpoint(self) -> object:
        """The picker's state (the only state a ``route`` changes), for ``rewind``."""
        return self.picker.checkpoint()

    def rewind(self, state: object) -> None:
        """Undo the ``route`` calls made since ``checkpoint`` returned ``state`` (a preview)."""
        self.picker.rewind(state)

    def candidates(self, request: RouteRequest, workers: Sequence[WorkerState],
                   match: Mapping[str, int]) -> Candidates:
        """Workers left after the filters. Raises ``NoEligibleWorker`` when none is."""
        kept = tuple(workers)
        for f in self.filters:
            kept = f.apply(request, kept, match)
        if not kept:
            raise NoEligibleWorker(f"pool profile {self.name!r}: no worker passed the filters")
        return Candidates(request, kept, match)

    def combined_scores(self, cands: Candidates) -> tuple[list[float], Scorer | None]:
        """Weight-normalised sum of the voting scorers (each in [0, 1], so the sum is too) and the
        heaviest voting scorer (None when all abstain: every score is then 0)."""
        total = [0.0] * len(cands.workers)
        weight_sum = 0.0
        lead: Scorer | None = None
        for ws in self.scorers:
            scores = ws.scorer.score(cands)
            if scores is None:
                continue
            if len(scores) != len(total):
                raise ValueError(f"scorer {type(ws.scorer).__name__} returned {len(scores)} scores "
                                 f"for {len(total)} workers")
            lead = lead or ws.scorer
            weight_sum += ws.weight
            for i, s in enumerate(scores):
                total[i] += ws.weight * s
        if weight_sum:
            total = [t / weight_sum for t in total]
        return total, lead

    def _choose(self, cands: Candidates) -> tuple[int, str]:
        scores, lead = self.combined_scores(cands)
        chosen = self.picker.pick(cands, scores)
        if self.picker.reason is not None:
            return chosen, self.picker.reason
        return chosen, lead.reason(cands, chosen) if lead is not None else NO_PREFERENCE
