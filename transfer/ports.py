"""Free TCP ports for listeners that bind later: gRPC servers, NIXL side channels, test clusters.

A port probed free and released is bound by its user seconds later (vLLM binds its NIXL side channel
only after loading the model). A port from the kernel's ephemeral range can be handed, in between, to
any socket bound to port 0 or any outgoing connection on the host — vLLM's own ZMQ sockets, Ray's
workers — and vLLM then waits forever for a side channel it could not bind. So ``free_ports`` picks
outside that range (``/proc/sys/net/ipv4/ip_local_port_range``) and outside Ray's default worker ports
(10002-19999), at random, and keeps a port only if it binds on ``host`` now. Two callers can still
pick the same port, rarely; ``orchestrator.launch.process`` restarts a worker whose bind failed.
"""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL = (32768, 60999)
RESERVED = ((0, 19999),)  # well-known ports, Ray's GCS/dashboard/client and its worker port range
MAX_PROBES = 256


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's ephemeral port range, inclusive (Linux's default where the file cannot be read)."""
    with contextlib.suppress(OSError, ValueError):
        low, high = (int(part) for part in path.read_text().split())
        return low, high
    return DEFAULT_EPHEMERAL


def stable_candidates(ephemeral: tuple[int, int]) -> list[range]:
    """The port ranges no ephemeral allocation and no reserved service uses (pure)."""
    blocked = sorted([*RESERVED, ephemeral])
    spans, start = [], 0
    for low, high in blocked:
        if low > start:
            spans.append(range(start, low))
        start = max(start, high + 1)
    if start <= 65535:
        spans.append(range(start, 65536))
    return [span for span in spans if len(span) > 0]


def _binds(host: str, port: int, stack: contextlib.ExitStack) -> bool:
    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    try:
        sock.bind((host, port))
    except OSError:
        return False
    return True


def free_ports(count: int, host: str = "127.0.0.1", rng: random.Random | None = None) -> list[int]:
    """``count`` distinct ports that bind on ``host`` right now, outside the ephemeral range (all held
    together while probing, so no repeats). Falls back to kernel-picked ports when the stable ranges
    yield too few within ``MAX_PROBES`` tries."""
    pick = rng or random.SystemRandom()
    candidates = [port for span in stable_candidates(ephemeral_range()) for port in span]
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(MAX_PROBES if candidates else 0):
            if len(ports) == count:
                break
            port = pick.choice(candidates)
            if port not in ports and _binds(host, port, stack):
                ports.append(port)
        while len(ports) < count:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports
