"""Where a worker binds, decided on the worker's own node (never on the driver).

``node_address`` finds the node's address: the NIC the spec names (its IPv4 address), else
``PDSERVE_NODE_IP`` (set by the launcher from Ray's view of the node), else 127.0.0.1.
``bind_on_node`` turns a launch spec into a concrete one: the gRPC host, vLLM's ``VLLM_HOST_IP`` and
NIXL side-channel host on that address, the side-channel port (``0`` in the plan) chosen here from the
node's free ports, and the simulated engine's handoff listener on the same address. Values the plan set
explicitly are kept. Pure apart from reading the NIC and probing one port.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

from protocol.launch import WorkerLaunchSpec
from transfer.ports import free_ports

NODE_IP_ENV = "PDSERVE_NODE_IP"
SIDE_HOST = "VLLM_NIXL_SIDE_CHANNEL_HOST"
SIDE_PORT = "VLLM_NIXL_SIDE_CHANNEL_PORT"
_SIOCGIFADDR = 0x8915


def interface_address(name: str) -> str:
    """The IPv4 address of network interface ``name``; raises ``OSError`` when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        packed = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
    return socket.inet_ntoa(packed[20:24])


def node_address(interface: str | None, environ: dict[str, str] | None = None) -> str:
    """This node's address for a worker's servers (see the module docstring for the order)."""
    if interface:
        return interface_address(interface)
    env = os.environ if environ is None else environ
    return env.get(NODE_IP_ENV) or "127.0.0.1"


def bind_on_node(spec: WorkerLaunchSpec, node_ip: str) -> WorkerLaunchSpec:
    """``spec`` with every address left open filled in for ``node_ip`` (a new spec; ``spec`` is frozen)."""
    host = spec.grpc_host or node_ip
    engine = spec.engine
    if engine.kind == "vllm":
        env = dict(engine.env)
        env.setdefault("VLLM_HOST_IP", host)
        env.setdefault(SIDE_HOST, host)
        if env.get(SIDE_PORT, "0") == "0":
            env[SIDE_PORT] = str(free_ports(1, env[SIDE_HOST])[0])
        engine = engine.model_copy(update={"env": tuple(sorted(env.items()))})
    elif engine.handoff_host is None:
        engine = engine.model_copy(update={"handoff_host": host})
    return spec.model_copy(update={"grpc_host": host, "engine": engine})


def side_channel_of(spec: WorkerLaunchSpec) -> str | None:
    """``host:port`` of a bound vLLM worker's NIXL side channel (None for other engines)."""
    env = dict(spec.engine.env)
    return f"{env[SIDE_HOST]}:{env[SIDE_PORT]}" if spec.engine.kind == "vllm" and SIDE_PORT in env else None
