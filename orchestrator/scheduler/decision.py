"""The routing decision record and the reason labels the pipeline itself produces.

``reason`` is a short, stable label from a small fixed set: it becomes a Prometheus label and the
``X-Route-Reason`` header, so it must never carry a worker id or a number. Plugins declare the labels they
can give in ``labels``; ``registry.REASONS`` is the union.
"""

from __future__ import annotations

from dataclasses import dataclass

SATURATION_VALVE = "saturation_valve"  # the pick was over its queue bound while another worker had room
NO_PREFERENCE = "no_preference"  # every scorer abstained; the picker's tie-break chose


@dataclass(frozen=True)
class Decision:
    """Where a request goes: the worker, how many of its leading blocks that worker already holds (per
    the index), and why."""

    worker_id: str
    matched_blocks: int
    reason: str


class NoEligibleWorker(LookupError):
    """No worker passed the profile's filters (e.g. none is healthy)."""
