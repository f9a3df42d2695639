"""The network of a simulated fleet: workers on hosts, hosts in racks, one NIC per host.

``SimTopology`` is the config's ``engine.topology`` (sim engines only) and travels to every sim worker in
its ``EngineSpec``, so both sides read one model. It names each worker's host by a fixed scheme of
loopback addresses, ``127.P.R.S`` (``P``: 1 prefill, 2 decode, 3 colocated; ``R``: rack + 1; ``S``: the
host's slot in its rack + 1), so a host is a real address a worker can bind here (every 127.0.0.0/8
address reaches the loopback interface) and its rack can be read back from the address alone.

Worker ``i`` of a pool runs on the pool's host ``i // workers_per_host``; a pool's hosts are dealt over
the racks in turn (host ``h`` in rack ``h % racks``), so every pool spans every rack. Each host has one
NIC of the sim engine's ``link_bandwidth_bytes_per_s`` (its profile's), shared by the
workers on it; a pull between hosts of different racks is capped at ``cross_rack_gbps`` and pays
``cross_rack_latency_s`` more. Addresses outside the scheme (127.0.0.1, say) belong to no rack.
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field

POOL_OCTETS = {"prefill": 1, "decode": 2, "both": 3}
MAX_SLOTS = 254  # hosts per rack and pool: the last octet runs 1..254


class SimTopology(BaseModel):
    """Hosts and racks of a simulated fleet (frozen; strict; unknown keys rejected).

    ``workers_per_host``: workers sharing one host and its NIC. ``racks``: racks the hosts of each pool
    are dealt over. ``cross_rack_gbps``: the most one pull between racks gets (None: as fast as the NIC).
    ``cross_rack_latency_s``: added to every pull between racks."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    workers_per_host: int = Field(default=1, ge=1)
    racks: int = Field(default=1, ge=1, le=254)
    cross_rack_gbps: float | None = Field(default=None, gt=0)
    cross_rack_latency_s: float = Field(default=0.0, ge=0)

    @property
    def cross_rack_bytes_per_s(self) -> float | None:
        return None if self.cross_rack_gbps is None else self.cross_rack_gbps * 1e9 / 8

    def host_of(self, role: str, index: int) -> str:
        """The address of the host worker ``index`` of pool ``role`` (``prefill``, ``decode`` or ``both``)
        runs on. Raises ``KeyError`` for another role, ``ValueError`` past the scheme's 254 hosts per rack."""
        host = index // self.workers_per_host
        rack, slot = host % self.racks, host // self.racks
        if index < 0 or slot >= MAX_SLOTS:
            raise ValueError(f"worker {role}-{index} falls outside the topology's {MAX_SLOTS} hosts per rack")
        return f"127.{POOL_OCTETS[role]}.{rack + 1}.{slot + 1}"

    @staticmethod
    def rack_of(host: str) -> int | None:
        """The rack of an address of the scheme (0-based), or None for any other host."""
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            return None
        first, pool, rack, slot = address.packed
        if first != 127 or pool not in POOL_OCTETS.values() or rack == 0 or slot == 0:
            return None
        return rack - 1

    def crosses_racks(self, src: str, dst: str) -> bool:
        """True when both hosts are in racks of the scheme and the racks differ."""
        a, b = self.rack_of(src), self.rack_of(dst)
        return a is not None and b is not None and a != b
