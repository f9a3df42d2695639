"""The simulated network a KV pull crosses: its host's NIC, shared by the sim engines on that host, and
the link from the source host (slower between racks, ``protocol.sim_topology``).

A NIC carries one pull at a time, first come first served: a pull starts when the NIC is free and holds
it for its whole transfer time, so two pulls into one host take twice as long as one, while two pulls
into two hosts run side by side. Only the pulling (decode) side's NIC is modelled; the source's egress is
not. NICs are shared by the engines of one process (one event loop, one clock) that name the same host;
a host whose workers were split over several processes gets one NIC per process (the launch plan keeps
a host's workers in one process). Pure arithmetic plus a per-process registry; no I/O.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from protocol.sim_topology import SimTopology
from worker.engines.sim.profile import SimProfile
from worker.engines.sim.timing import transfer_time


class Nic:
    """One host's NIC: the loop time at which it is free again. Mutated on the event loop only."""

    __slots__ = ("__weakref__", "free_at", "host")

    def __init__(self, host: str) -> None:
        self.host = host
        self.free_at = 0.0

    def reserve(self, now: float, seconds: float) -> float:
        """Queue a transfer of ``seconds`` asked for at loop time ``now``; returns when it ends."""
        done = max(now, self.free_at) + seconds
        self.free_at = done
        return done


_NICS: weakref.WeakValueDictionary[str, Nic] = weakref.WeakValueDictionary()


def nic_for(host: str) -> Nic:
    """The NIC of ``host`` in this process: one object for every engine that names the host (kept while
    one of them holds it)."""
    return _NICS.setdefault(host, Nic(host))


@dataclass(frozen=True)
class LinkModel:
    """The link from any source host into the host ``own_host``: the profile's NIC bandwidth and latency,
    capped and lengthened between racks by ``topology`` (None: no racks)."""

    profile: SimProfile
    own_host: str
    topology: SimTopology | None = None

    def transfer_seconds(self, src_host: str, num_bytes: int) -> float:
        """Wall-clock seconds ``num_bytes`` take from ``src_host`` once the NIC is free (already divided by
        the profile's ``speedup``); 0 for no bytes."""
        p, t = self.profile, self.topology
        if num_bytes <= 0 or t is None or not t.crosses_racks(src_host, self.own_host):
            return transfer_time(p, num_bytes)
        cap = t.cross_rack_bytes_per_s
        bandwidth = p.link_bandwidth_bytes_per_s if cap is None else min(p.link_bandwidth_bytes_per_s, cap)
        return (p.link_latency_s + t.cross_rack_latency_s + num_bytes / bandwidth) / p.speedup
