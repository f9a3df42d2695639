"""Link bandwidth between hosts, for the KV transfer-cost term of decode placement."""

from __future__ import annotations

from dataclasses import dataclass, field

# Placeholders until config or the transfer probe says otherwise: a same-host copy through shared memory,
# and a 10 Gb/s Ethernet hop between hosts.
DEFAULT_SAME_HOST_BYTES_PER_S = 10e9
DEFAULT_CROSS_HOST_BYTES_PER_S = 1.25e9


@dataclass(frozen=True)
class LinkTable:
    """Bytes per second from a prefill host to a decode host. Explicit ``links`` entries
    ``(src, dst, bytes_per_s)`` win (looked up as given, then reversed); otherwise same-host or cross-host
    defaults apply. Immutable. Raises ``ValueError`` on a non-positive bandwidth."""

    same_host_bytes_per_s: float = DEFAULT_SAME_HOST_BYTES_PER_S
    cross_host_bytes_per_s: float = DEFAULT_CROSS_HOST_BYTES_PER_S
    links: tuple[tuple[str, str, float], ...] = ()
    _lookup: dict[tuple[str, str], float] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        rates = [self.same_host_bytes_per_s, self.cross_host_bytes_per_s, *(bw for _, _, bw in self.links)]
        if min(rates) <= 0:
            raise ValueError("link bandwidths must be > 0")
        object.__setattr__(self, "_lookup", {(src, dst): bw for src, dst, bw in self.links})

    def bandwidth(self, src: str, dst: str) -> float:
        """Bytes per second from ``src`` to ``dst``."""
        bw = self._lookup.get((src, dst)) or self._lookup.get((dst, src))
        if bw is not None:
            return bw
        return self.same_host_bytes_per_s if src == dst else self.cross_host_bytes_per_s

    def transfer_seconds(self, nbytes: int, src: str, dst: str) -> float:
        return nbytes / self.bandwidth(src, dst)
