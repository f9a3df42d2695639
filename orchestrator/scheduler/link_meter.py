"""Measured links: each (prefill host, decode host) pair's bandwidth and latency, learnt from the KV
pulls of real handoffs and smoothed, with the configured table as the prior.

Per pair, ``LinkFit`` keeps exponentially weighted means of the pulls' bytes ``x`` and seconds ``y`` (and
of ``x*x`` and ``x*y``) and fits ``y = latency + x / bandwidth`` to them by weighted least squares. The
fit needs pulls of different sizes (the spread of ``x`` at least ``MIN_SPREAD`` of its mean) and a line
with a positive slope and a non-negative intercept; otherwise the latency stays what it last was (the
prior's to begin with, never more than half the mean pull time) and the bandwidth is the mean bytes over
the mean seconds net of it. The first pull replaces the prior outright (weights ``max(alpha, 1/n)``, so the
first samples are averaged evenly), later ones move the estimate by ``alpha``.

Pure: no I/O, no clock, no asyncio. Mutated by its owner on one thread (the orchestrator's event loop);
scorers read only the frozen ``LinkTable`` snapshots ``snapshot`` returns.
"""

from __future__ import annotations

from types import MappingProxyType

from .links import LinkEstimate, LinkTable, Pair

MIN_SPREAD = 0.2  # standard deviation of the pull sizes / their mean, below which no latency is fitted
DEFAULT_ALPHA = 0.2


class LinkFit:
    """The smoothed fit of one link's pulls (see the module docstring). Starts at ``prior``."""

    __slots__ = ("_alpha", "_latency", "_mx", "_mxx", "_mxy", "_my", "estimate")

    def __init__(self, prior: LinkEstimate, alpha: float = DEFAULT_ALPHA) -> None:
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        self._alpha = alpha
        self._latency = prior.latency_s
        self._mx = self._my = self._mxx = self._mxy = 0.0
        self.estimate = prior

    def observe(self, nbytes: int, seconds: float) -> LinkEstimate:
        """Take one pull of ``nbytes`` in ``seconds`` into the fit; returns the new estimate. A pull of no
        bytes or no time says nothing about the link and is ignored."""
        if nbytes <= 0 or seconds <= 0:
            return self.estimate
        n = self.estimate.samples + 1
        a = max(self._alpha, 1.0 / n)
        x, y = float(nbytes), float(seconds)
        self._mx += a * (x - self._mx)
        self._my += a * (y - self._my)
        self._mxx += a * (x * x - self._mxx)
        self._mxy += a * (x * y - self._mxy)
        self.estimate = self._fit(n)
        return self.estimate

    def _fit(self, n: int) -> LinkEstimate:
        mx, my = self._mx, self._my
        var = self._mxx - mx * mx
        cov = self._mxy - mx * my
        if n >= 2 and var > (MIN_SPREAD * mx) ** 2 and cov > 0:
            slope = cov / var
            latency = my - slope * mx
            if latency >= 0:
                self._latency = latency
                return LinkEstimate(1.0 / slope, latency, n)
        latency = min(self._latency, 0.5 * my)
        return LinkEstimate(mx / (my - latency), latency, n)


class MeasuredLinks:
    """Every measured pair's ``LinkFit`` over the ``priors`` table. ``observe`` feeds a pull; ``snapshot``
    is the frozen table the decode scorer reads (the same object until the next ``observe``)."""

    def __init__(self, priors: LinkTable, alpha: float = DEFAULT_ALPHA) -> None:
        self.priors = priors
        self.alpha = alpha
        self._fits: dict[Pair, LinkFit] = {}
        self._snapshot: LinkTable | None = priors

    def observe(self, src: str, dst: str, nbytes: int, seconds: float) -> LinkEstimate:
        """One pull of ``nbytes`` in ``seconds`` from prefill host ``src`` to decode host ``dst``; returns
        the pair's estimate (unchanged for a pull of no bytes or no time)."""
        fit = self._fits.get((src, dst))
        if fit is None:
            if nbytes <= 0 or seconds <= 0:
                return self.priors.estimate(src, dst)
            fit = self._fits[(src, dst)] = LinkFit(self.priors.prior(src, dst), self.alpha)
        self._snapshot = None
        return fit.observe(nbytes, seconds)

    def estimates(self) -> dict[Pair, LinkEstimate]:
        """The measured pairs' estimates (a new dict)."""
        return {pair: fit.estimate for pair, fit in self._fits.items()}

    def snapshot(self) -> LinkTable:
        """The priors with every measured pair's estimate: a frozen table, rebuilt after an ``observe``."""
        if self._snapshot is None:
            p = self.priors
            self._snapshot = LinkTable(p.same_host_bytes_per_s, p.cross_host_bytes_per_s, p.links, p.latency_s,
                                       MappingProxyType(self.estimates()))
        return self._snapshot
