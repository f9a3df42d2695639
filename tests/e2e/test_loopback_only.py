"""House rule: everything a local ``pdserve up`` starts listens on 127.0.0.0/8 only.

The session's pd_server is ``pdserve up`` with the embedded single-node Ray, as ``make serve`` runs it:
the front end, Ray's GCS, raylet and agents, the worker actors, their gRPC servers, NIXL side channels
and KV-event endpoints, and the vLLM engines below them. Not one of their sockets may accept traffic on
the host's network address or on a wildcard (0.0.0.0, ::).
"""

from __future__ import annotations

import ipaddress

import pytest

from tests.e2e.proctree import cmdline, descendants, listening_addresses
from tests.e2e.servers import Server

pytestmark = pytest.mark.e2e


def test_every_process_of_a_local_deployment_listens_on_loopback_only(pd_server: Server) -> None:
    pids = [pd_server.proc.pid, *descendants(pd_server.proc.pid)]
    listening = listening_addresses(pids)
    commands = " ".join(cmdline(pid) for pid in pids)
    assert "gcs_server" in commands and "raylet" in commands, "the embedded Ray's daemons were not found"
    assert len(listening) >= 5, f"too few listening sockets to be the whole deployment: {listening}"
    stray = {address: cmdline(pid)[:120] for address, pid in listening.items()
             if not ipaddress.ip_address(address.rsplit(":", 1)[0]).is_loopback}
    assert not stray, f"sockets outside 127.0.0.0/8: {stray}"
