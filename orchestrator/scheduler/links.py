"""Links between hosts, for the KV transfer-cost term of decode placement: a frozen table of what moving
KV from a prefill host to a decode host costs (``LinkTable``), each entry a bandwidth and a latency
(``LinkEstimate``). The table holds the configured priors and, once handoffs have been measured, the
measured estimates (``orchestrator.scheduler.link_meter.MeasuredLinks`` builds those snapshots)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Priors until config or measurements say otherwise: a same-host copy through shared memory or NVLink,
# and a 10 Gb/s Ethernet hop between hosts.
DEFAULT_SAME_HOST_BYTES_PER_S = 10e9
DEFAULT_CROSS_HOST_BYTES_PER_S = 1.25e9

Pair = tuple[str, str]  # (prefill host, decode host): the direction KV moves


@dataclass(frozen=True)
class LinkEstimate:
    """What one link costs: ``seconds(n) = latency_s + n / bandwidth_bytes_per_s``. ``samples`` is how
    many measured pulls it rests on (0: a prior)."""

    bandwidth_bytes_per_s: float
    latency_s: float = 0.0
    samples: int = 0

    def __post_init__(self) -> None:
        if self.bandwidth_bytes_per_s <= 0 or self.latency_s < 0:
            raise ValueError("a link needs bandwidth > 0 and latency >= 0")

    def seconds(self, nbytes: int) -> float:
        return self.latency_s + nbytes / self.bandwidth_bytes_per_s


@dataclass(frozen=True)
class LinkTable:
    """Bytes per second and latency from a prefill host to a decode host. Immutable.

    ``estimate(src, dst)`` looks up, in order: the measured entry ``(src, dst)``, the measured reverse
    ``(dst, src)`` (links are taken as symmetric until a direction is measured), a configured ``links``
    entry ``(src, dst, bytes_per_s)`` either way round, and the same-host or cross-host prior, with
    ``latency_s`` as every prior's latency. Raises ``ValueError`` on a non-positive bandwidth."""

    same_host_bytes_per_s: float = DEFAULT_SAME_HOST_BYTES_PER_S
    cross_host_bytes_per_s: float = DEFAULT_CROSS_HOST_BYTES_PER_S
    links: tuple[tuple[str, str, float], ...] = ()
    latency_s: float = 0.0
    measured: Mapping[Pair, LinkEstimate] = field(default_factory=dict, hash=False)
    _lookup: dict[Pair, float] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        rates = [self.same_host_bytes_per_s, self.cross_host_bytes_per_s, *(bw for _, _, bw in self.links)]
        if min(rates) <= 0 or self.latency_s < 0:
            raise ValueError("link bandwidths must be > 0 and the latency >= 0")
        object.__setattr__(self, "_lookup", {(src, dst): bw for src, dst, bw in self.links})

    def prior(self, src: str, dst: str) -> LinkEstimate:
        """The link before any measurement: a configured entry, else the same-host or cross-host default."""
        bw = self._lookup.get((src, dst)) or self._lookup.get((dst, src))
        if bw is None:
            bw = self.same_host_bytes_per_s if src == dst else self.cross_host_bytes_per_s
        return LinkEstimate(bw, self.latency_s)

    def estimate(self, src: str, dst: str) -> LinkEstimate:
        """The best knowledge of the link from ``src`` to ``dst`` (see the class docstring for the order)."""
        found = self.measured.get((src, dst)) or self.measured.get((dst, src))
        return found if found is not None else self.prior(src, dst)

    def bandwidth(self, src: str, dst: str) -> float:
        """Bytes per second from ``src`` to ``dst``."""
        return self.estimate(src, dst).bandwidth_bytes_per_s

    def transfer_seconds(self, nbytes: int, src: str, dst: str) -> float:
        """Seconds to move ``nbytes`` from ``src`` to ``dst``: latency plus bytes over bandwidth."""
        return self.estimate(src, dst).seconds(nbytes)
