"""Free TCP ports on the loopback interface, for gRPC servers and NIXL side channels.

``free_ports`` binds port 0 on 127.0.0.1, reads the port the kernel picked and releases it. Another
process may take it before the caller binds it; callers on a busy host retry their start.
"""

from __future__ import annotations

import contextlib
import socket


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports free on ``host`` right now (all probed together, so no repeats)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports
