"""The routing benchmarks' hit accounting: totals are ratios of sums, never means of ratios."""

from __future__ import annotations

import pytest

from bench.routing.hit_accounting import HitTally


def test_hit_tally_is_a_ratio_of_sums() -> None:
    tally = HitTally().add(prompt_tokens=16, predicted_tokens=16, observed_tokens=16)
    tally = tally.add(prompt_tokens=1600, predicted_tokens=1600, observed_tokens=0)
    # mean of ratios would be 0.5; the block-weighted ratio of sums is 16 / 1616
    assert tally.observed_hit_rate == pytest.approx(16 / 1616)
    assert tally.realised_ratio == pytest.approx(16 / 1616)
    assert HitTally().realised_ratio == 0.0
    with pytest.raises(ValueError):
        tally.add(prompt_tokens=1, predicted_tokens=-1, observed_tokens=0)
