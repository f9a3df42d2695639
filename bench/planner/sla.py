"""The sizing math of ``pdserve autoscale``: predict TTFT and ITL at an observed load from a sim profile, and
the (fractional) prefill and decode workers the SLOs need under given correction factors. Pure: no I/O, no
clock, no state (``bench.planner.control`` holds the corrections and the limits).

The method follows NVIDIA Dynamo's SLA planner (planner design: https://docs.nvidia.com/dynamo/latest/
design-docs/component-design/planner-design): every interval it reads mean TTFT and ITL, the request count
and the mean input and output lengths from the front end's metrics, keeps correction factors
``observed TTFT / expected TTFT`` and ``observed ITL / expected ITL`` for what the performance model misses
(queueing in bursts, cache hits, prefills inside decode steps), and sizes both pools from the corrected
model. Dynamo interpolates profiled sweeps; here the model is the simulated engine's own step-time functions
(``worker.engines.sim.timing``), so the expectation and the sizing use the same arithmetic as the engine:

* prefill: one request costs ``work`` engine-seconds when prompts share full steps of
  ``max_num_batched_tokens``, and ``unloaded`` seconds of TTFT alone (its chunks, then its KV pull). At
  utilisation ``rho = rate x work / P`` the expected TTFT is ``unloaded / (1 - rho)``; the corrected TTFT
  ``c_p x unloaded / (1 - rho)`` meets the SLO iff ``P >= rate x work / (1 - c_p x unloaded / SLO)``.
* decode: a step of ``b`` sequences at the mean context (prompt + half the output) takes ``s(b)``; the
  largest ``b`` with ``c_d x s(b) <= ITL SLO`` (and within ``max_num_seqs`` and the KV pool) is a worker's
  seat count; by Little's law ``rate x output tokens x c_d x s(b)`` sequences decode at once, so
  ``D >= that / b``.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from protocol.sim_profile import SimProfile
from worker.engines.sim.timing import StepShape, chunk_attn_pairs, kv_bytes, step_time, transfer_time

MIN_HEADROOM = 0.1  # when even one unloaded prompt misses the TTFT SLO, size for 10% prefill utilisation


@dataclass(frozen=True)
class Pools:
    """Worker counts of the two pools."""

    prefill: int
    decode: int

    @property
    def total(self) -> int:
        return self.prefill + self.decode

    @property
    def label(self) -> str:
        return f"{self.prefill}P:{self.decode}D"


@dataclass(frozen=True)
class Load:
    """One interval's traffic: request rate (req/s) and per-request means (tokens)."""

    rate: float
    prompt_tokens: float
    cached_tokens: float
    output_tokens: float

    @property
    def uncached_tokens(self) -> float:
        return max(0.0, self.prompt_tokens - self.cached_tokens)


@dataclass(frozen=True)
class Slo:
    ttft_s: float
    itl_s: float


@dataclass(frozen=True)
class Prediction:
    """The profile's view of the observed load on the healthy pools. ``prefill_work_s``: engine-seconds per
    request at full prefill steps; ``ttft_unloaded_s``: one prompt alone (chunks + KV pull);
    ``prefill_utilisation``/``ttft_s``: None without a healthy prefill worker (``ttft_s`` also when
    utilisation >= 1); ``decode_batch``: sequences per healthy decode worker; ``itl_s``: a step at that batch."""

    prefill_work_s: float
    ttft_unloaded_s: float
    prefill_utilisation: float | None
    ttft_s: float | None
    decode_batch: float
    itl_s: float


# --------------------------------------------------------------------------- the profile's predictions
def prefill_alone_s(profile: SimProfile, uncached: int, cached: int = 0) -> float:
    """Seconds one prompt's prefill takes alone: its chunks of at most ``max_num_batched_tokens``."""
    total, done, left = 0.0, cached, max(1, uncached)
    while left > 0:
        n = min(profile.max_num_batched_tokens, left)
        total += step_time(profile, StepShape(prefill_tokens=n, prefill_attn_pairs=chunk_attn_pairs(done, n)))
        done, left = done + n, left - n
    return total


def prefill_work_s(profile: SimProfile, uncached: int, cached: int = 0) -> float:
    """Engine-seconds one prompt costs when prompts like it fill whole steps (the fixed step cost shared)."""
    uncached = max(1, uncached)
    per_step = profile.max_num_batched_tokens // uncached
    if per_step <= 1:
        return prefill_alone_s(profile, uncached, cached)
    shape = StepShape(prefill_tokens=per_step * uncached,
                      prefill_attn_pairs=per_step * chunk_attn_pairs(cached, uncached))
    return step_time(profile, shape) / per_step


def decode_step_s(profile: SimProfile, batch: int, context: int) -> float:
    """One decode step of ``batch`` sequences of ``context`` tokens each."""
    return step_time(profile, StepShape(decode_seqs=max(1, batch), decode_context_tokens=max(1, batch) * context))


def max_decode_batch(profile: SimProfile, context: int, length: int, correction: float, itl_s: float) -> int | None:
    """The most sequences of ``context`` tokens one worker can decode with ``correction x step <= itl_s``,
    within ``max_num_seqs`` and the KV pool (sequences of ``length`` tokens); None when one alone misses."""
    blocks_each = max(1, math.ceil(length / profile.block_size))
    seats = range(1, max(1, min(profile.max_num_seqs, profile.num_blocks // blocks_each)) + 1)
    # the step time grows with the batch, so the batches that fit are a prefix of ``seats``
    fit = bisect.bisect_right(seats, itl_s, key=lambda b: correction * decode_step_s(profile, b, context))
    return fit or None


def _context(load: Load) -> int:
    return max(1, round(load.prompt_tokens + load.output_tokens / 2))


def prefill_costs(profile: SimProfile, load: Load) -> tuple[float, float]:
    """(engine-seconds per request at full steps, seconds of TTFT for one prompt alone: chunks + KV pull)."""
    uncached, cached = round(load.uncached_tokens), round(load.cached_tokens)
    pull = transfer_time(profile, kv_bytes(profile, math.ceil(load.prompt_tokens / profile.block_size)))
    return prefill_work_s(profile, uncached, cached), prefill_alone_s(profile, uncached, cached) + pull


def predict(profile: SimProfile, load: Load, itl_observed_s: float | None, healthy: Pools) -> Prediction:
    """What the profile expects at ``load`` on ``healthy``. The decode batch comes from Little's law with the
    observed ITL (concurrency = rate x output tokens x ITL), else from the unloaded step."""
    work, unloaded = prefill_costs(profile, load)
    rho = load.rate * work / healthy.prefill if healthy.prefill else None
    ttft = unloaded / (1 - rho) if rho is not None and rho < 1 else None
    context = _context(load)
    itl_ref = itl_observed_s if itl_observed_s is not None else decode_step_s(profile, 1, context)
    batch = load.rate * load.output_tokens * itl_ref / max(1, healthy.decode)
    return Prediction(work, unloaded, rho, ttft, batch, decode_step_s(profile, max(1, round(batch)), context))


# --------------------------------------------------------------------------- sizing
def prefill_needed(profile: SimProfile, load: Load, correction: float, ttft_slo_s: float) -> tuple[float, str | None]:
    """Prefill workers (fractional) for ``correction x unloaded / (1 - rho) <= ttft_slo_s``, and a note when
    the SLO is out of reach whatever the count (then sized for ``MIN_HEADROOM``)."""
    work, alone = prefill_costs(profile, load)
    unloaded = correction * alone
    headroom = 1 - unloaded / ttft_slo_s
    note = None
    if headroom < MIN_HEADROOM:
        note = f"TTFT SLO out of reach: one prompt alone takes {unloaded * 1e3:.0f} ms corrected"
        headroom = MIN_HEADROOM
    return load.rate * work / headroom, note


def decode_needed(profile: SimProfile, load: Load, correction: float, itl_slo_s: float) -> tuple[float, str | None]:
    """Decode workers (fractional): concurrent decodes at the SLO-meeting batch over that batch."""
    context = _context(load)
    length = max(1, round(load.prompt_tokens + load.output_tokens))
    batch = max_decode_batch(profile, context, length, correction, itl_slo_s)
    note = None
    if batch is None:
        alone = correction * decode_step_s(profile, 1, context)
        note = f"ITL SLO out of reach: one sequence steps in {alone * 1e3:.1f} ms corrected"
        batch = 1
    concurrent = load.rate * load.output_tokens * correction * decode_step_s(profile, batch, context)
    return concurrent / batch, note
