"""The control step of ``pdserve autoscale``: one interval's observation -> corrections -> sized pools ->
a bounded target. Pure; ``decide(profile, observed, state, settings)`` returns the decision and the next
state (corrections and hysteresis), so a whole run is a fold over intervals.

Corrections are ``observed / predicted`` TTFT and ITL (NVIDIA Dynamo's SLA planner keeps the same two
factors; see ``bench.planner.sla``), bounded to [0.2, 5] and smoothed with weight ``smoothing`` on the new
value. An interval where the profile predicts no steady state for prefill (utilisation >= 1) leaves the
prefill correction as it was: the observed TTFT then measures a growing queue, not a miscalibration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from protocol.sim_profile import SimProfile

from .sla import Load, Pools, Prediction, Slo, decode_needed, predict, prefill_needed

CORRECTION_BOUNDS = (0.2, 5.0)


@dataclass(frozen=True)
class Observed:
    """One interval of one model as the sizing sees it. ``ttft_s``/``itl_s``: the chosen statistic (None: no
    sample); ``healthy``: workers taking requests; ``size``: the pools as ordered (healthy, starting and down,
    not draining); ``changing``: workers starting or draining."""

    seconds: float
    requests: int
    load: Load
    ttft_s: float | None
    itl_s: float | None
    healthy: Pools
    size: Pools
    changing: int = 0


@dataclass(frozen=True)
class Limits:
    """Bounds on a decision: per pool, on the total (``max_workers``), and per interval (``max_step``)."""

    min_prefill: int = 1
    max_prefill: int = 64
    min_decode: int = 1
    max_decode: int = 64
    max_workers: int | None = None
    max_step: int = 2


@dataclass(frozen=True)
class Settings:
    slo: Slo
    limits: Limits = field(default_factory=Limits)
    smoothing: float = 0.5
    min_requests: int = 20


@dataclass(frozen=True)
class Corrections:
    """Smoothed observed/predicted ratios; None until the first usable interval (sizing then uses 1)."""

    prefill: float | None = None
    decode: float | None = None


@dataclass(frozen=True)
class State:
    """What ``decide`` carries between intervals: corrections, and the direction (+1/-1, 0: none) of a
    one-worker change each pool asked for last interval (hysteresis)."""

    corrections: Corrections = field(default_factory=Corrections)
    pending: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Decision:
    """One interval's outcome. ``skipped``: why nothing was sized (then only ``observed`` and ``current`` are
    meaningful and ``target == current``); ``needed``: fractional workers the SLOs need; ``sized``: those
    rounded up; ``target``: after limits, steps and hysteresis; ``notes``: what bent the target."""

    observed: Observed
    current: Pools
    target: Pools
    skipped: str | None = None
    prediction: Prediction | None = None
    corrections: Corrections = field(default_factory=Corrections)
    needed: tuple[float, float] = (0.0, 0.0)
    sized: Pools | None = None
    notes: tuple[str, ...] = ()

    @property
    def changes(self) -> bool:
        return self.skipped is None and self.target != self.current


def corrected(previous: float | None, observed: float | None, predicted: float | None,
              smoothing: float) -> float | None:
    """The next correction: ``observed / predicted`` bounded to ``CORRECTION_BOUNDS``, blended with
    ``previous`` (weight ``smoothing`` on the new value); ``previous`` when either is missing."""
    if observed is None or predicted is None or predicted <= 0:
        return previous
    raw = min(max(observed / predicted, CORRECTION_BOUNDS[0]), CORRECTION_BOUNDS[1])
    return raw if previous is None else smoothing * raw + (1 - smoothing) * previous


def _clamp(value: int, lo: int, hi: int) -> int:
    return min(max(value, lo), hi)


def limit(sized: Pools, current: Pools, limits: Limits, pending: tuple[int, int]) -> tuple[Pools, tuple[int, int],
                                                                                             tuple[str, ...]]:
    """The target for ``sized`` from ``current``: clamp each pool to its bounds; fit ``max_workers`` (both
    pools shrunk in proportion, each kept at its minimum); hold a one-worker change until the next interval
    asks for it in the same direction (``pending`` in, ``pending`` out); move at most ``max_step`` per pool;
    never grow past ``max_workers``. Returns (target, pending, notes)."""
    notes: list[str] = []
    want = [_clamp(sized.prefill, limits.min_prefill, limits.max_prefill),
            _clamp(sized.decode, limits.min_decode, limits.max_decode)]
    if [*want] != [sized.prefill, sized.decode]:
        notes.append(f"clamped to {want[0]}P:{want[1]}D by --min/--max")
    cap = limits.max_workers
    if cap is not None and sum(want) > cap:
        p = _clamp(round(want[0] * cap / sum(want)), limits.min_prefill, cap - limits.min_decode)
        want = [p, max(limits.min_decode, cap - p)]
        notes.append(f"fitted to --max-workers {cap}: {want[0]}P:{want[1]}D")
    now = [current.prefill, current.decode]
    new_pending = [0, 0]
    for i, pool in enumerate(("prefill", "decode")):
        delta = want[i] - now[i]
        if abs(delta) == 1 and pending[i] != delta:
            new_pending[i] = delta
            notes.append(f"{pool} {delta:+d} held (hysteresis: applied if asked again next interval)")
            want[i] = now[i]
        elif abs(delta) > limits.max_step:
            want[i] = now[i] + limits.max_step * (1 if delta > 0 else -1)
            notes.append(f"{pool} {delta:+d} limited to {want[i] - now[i]:+d} (--max-step)")
    if cap is not None:
        for i in (0, 1):  # growth never takes the total past the cap (the other pool may still be shrinking)
            excess = sum(want) - max(cap, sum(now))
            if excess > 0 and want[i] > now[i]:
                want[i] -= min(excess, want[i] - now[i])
    return Pools(want[0], want[1]), (new_pending[0], new_pending[1]), tuple(notes)


def decide(profile: SimProfile, observed: Observed, state: State, settings: Settings) -> tuple[Decision, State]:
    """One interval: skip it (too few requests, a change in progress), else predict, update the corrections,
    size and limit. The returned state feeds the next call."""
    current = observed.size
    if observed.requests < settings.min_requests:
        why = f"{observed.requests} requests in the interval (< --min-requests {settings.min_requests})"
        return Decision(observed, current, current, skipped=why, corrections=state.corrections), \
            replace(state, pending=(0, 0))
    if observed.changing:
        why = f"a scale change is in progress ({observed.changing} workers starting or draining)"
        return Decision(observed, current, current, skipped=why, corrections=state.corrections), \
            replace(state, pending=(0, 0))
    pred = predict(profile, observed.load, observed.itl_s, observed.healthy)
    prev = state.corrections
    corr = Corrections(corrected(prev.prefill, observed.ttft_s, pred.ttft_s, settings.smoothing),
                       corrected(prev.decode, observed.itl_s, pred.itl_s, settings.smoothing))
    need_p, note_p = prefill_needed(profile, observed.load, corr.prefill or 1.0, settings.slo.ttft_s)
    need_d, note_d = decode_needed(profile, observed.load, corr.decode or 1.0, settings.slo.itl_s)
    sized = Pools(math.ceil(need_p - 1e-9), max(1, math.ceil(need_d - 1e-9)))
    target, pending, notes = limit(sized, current, settings.limits, state.pending)
    notes = tuple(n for n in (note_p, note_d) if n) + notes
    if pred.ttft_s is None and observed.healthy.prefill:
        notes += (f"prefill predicted overloaded (utilisation {pred.prefill_utilisation:.2f}): "
                  "its correction is unchanged",)
    decision = Decision(observed, current, target, None, pred, corr, (need_p, need_d), sized, notes)
    return decision, State(corr, pending)
