"""Ports for listeners that bind later stay out of the kernel's ephemeral range and Ray's worker ports."""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path

from transfer.ports import RESERVED, ephemeral_range, free_ports, stable_candidates


def test_the_ephemeral_range_is_read_from_the_kernel_file(tmp_path: Path) -> None:
    path = tmp_path / "range"
    path.write_text("40000\t50000\n")
    assert ephemeral_range(path) == (40000, 50000)
    assert ephemeral_range(tmp_path / "missing") == (32768, 60999)


def test_stable_candidates_skip_reserved_and_ephemeral_ports() -> None:
    assert stable_candidates((32768, 60999)) == [range(20000, 32768), range(61000, 65536)]
    assert stable_candidates((10000, 65535)) == []  # everything above the reserved ports is ephemeral
    assert stable_candidates((15000, 25000)) == [range(25001, 65536)]


def test_free_ports_are_distinct_bindable_and_outside_the_ephemeral_range() -> None:
    low, high = ephemeral_range()
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert not any(low <= p <= high for p in ports)
    assert not any(a <= p <= b for p in ports for a, b in RESERVED)
    with contextlib.ExitStack() as stack:
        for port in ports:
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)).bind(("127.0.0.1", port))


def test_a_port_in_use_is_never_returned() -> None:
    first = free_ports(1, rng=random.Random(7))[0]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", first))
        holder.listen()
        again = free_ports(1, rng=random.Random(7))[0]  # the same draw finds it taken and moves on
    assert again != first
