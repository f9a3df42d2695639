"""Prefix-hit accounting for the routing benchmarks: what the router predicted would be cached versus
what the engine reported. (The orchestrator itself counts both as Prometheus sums,
``pdserve_cached_tokens_total{source="predicted"|"observed"}``.)

Totals are sums of tokens over requests, so every rate is a ratio of sums (a long prompt weighs in by its
blocks), never a mean of per-request ratios.
"""

from __future__ import annotations

from dataclasses import dataclass


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


@dataclass(frozen=True)
class HitTally:
    """Immutable running totals; ``add`` returns a new tally."""

    prompt_tokens: int = 0
    predicted_tokens: int = 0
    observed_tokens: int = 0

    def add(self, *, prompt_tokens: int, predicted_tokens: int, observed_tokens: int) -> HitTally:
        """Count one request. Raises ``ValueError`` on a negative count."""
        if min(prompt_tokens, predicted_tokens, observed_tokens) < 0:
            raise ValueError("token counts must be >= 0")
        return HitTally(
            self.prompt_tokens + prompt_tokens,
            self.predicted_tokens + predicted_tokens,
            self.observed_tokens + observed_tokens,
        )

    @property
    def predicted_hit_rate(self) -> float:
        """Share of prompt tokens the router expected to be cached."""
        return _ratio(self.predicted_tokens, self.prompt_tokens)

    @property
    def observed_hit_rate(self) -> float:
        """Share of prompt tokens the engines actually found cached."""
        return _ratio(self.observed_tokens, self.prompt_tokens)

    @property
    def realised_ratio(self) -> float:
        """Observed over predicted cached tokens (1.0: the index is exact; 0 when nothing was predicted)."""
        return _ratio(self.observed_tokens, self.predicted_tokens)
