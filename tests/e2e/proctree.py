"""Read the process tree of a server the tests started, from /proc (Linux; tests only).

Used to find one pdserve worker's processes (the ``python -m worker`` process whose launch spec names
the worker, and its vLLM engine-core children), to measure the CPU time they burn, which tells a
request that really stopped from one that is still being decoded, and to list the addresses a
server's processes listen on.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _entries(pid: int, folder: str) -> list[Path]:
    """The entries of /proc/PID/FOLDER (``task``, ``fd``); none if the process is gone or unreadable."""
    try:
        return list(Path(f"/proc/{pid}/{folder}").iterdir())
    except OSError:
        return []


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in _entries(pid, "task"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (not ``pid`` itself), parents before children."""
    out: list[int] = []
    frontier = [pid]
    while frontier:
        kids = [c for p in frontier for c in _children(p)]
        out += kids
        frontier = kids
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def worker_processes(root_pid: int, worker_id: str, candidates: list[int] | None = None) -> list[int]:
    """The worker process hosting ``worker_id`` and all of its descendants, found below ``root_pid``
    (or among ``candidates`` when given)."""
    marker = re.compile(r'"worker_id":\s*"' + re.escape(worker_id) + '"')
    pool = descendants(root_pid) if candidates is None else candidates
    hosts = [p for p in pool if " -m worker " in cmdline(p) and marker.search(cmdline(p))]
    if not hosts:
        raise LookupError(f"no worker process for {worker_id} below pid {root_pid}")
    return [pid for host in hosts for pid in [host, *descendants(host)]]


def _parse_cpu_list(text: str) -> set[int]:
    cores: set[int] = set()
    for part in text.strip().split(","):
        low, _, high = part.partition("-")
        cores.update(range(int(low), int(high or low) + 1))
    return cores


def _thread_files(pids: list[int], name: str) -> list[tuple[int, str, str]]:
    """``(pid, tid, text of /proc/PID/task/TID/NAME)`` for every thread of ``pids`` still there."""
    out: list[tuple[int, str, str]] = []
    for pid in pids:
        for task in _entries(pid, "task"):
            try:
                out.append((pid, task.name, (task / name).read_text()))
            except OSError:
                continue
    return out


def thread_cores(pids: list[int]) -> dict[str, set[int]]:
    """``Cpus_allowed_list`` of every thread of ``pids``, keyed ``"pid/tid name"``."""
    out: dict[str, set[int]] = {}
    for pid, tid, text in _thread_files(pids, "status"):
        status = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
        out[f"{pid}/{tid} {status.get('Name', '').strip()}"] = _parse_cpu_list(status["Cpus_allowed_list"])
    return out


def thread_niceness(pids: list[int]) -> dict[str, int]:
    """The nice value of every thread of ``pids``, keyed ``"pid/tid"``; vanished threads are left out."""
    return {f"{pid}/{tid}": int(text.rsplit(")", 1)[1].split()[16])  # nice: field 19 of stat
            for pid, tid, text in _thread_files(pids, "stat")}


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` (all their threads), in seconds; vanished pids count 0."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / _CLOCK_TICKS


def _socket_inodes(pids: list[int]) -> dict[str, int]:
    """``socket inode -> pid`` for every socket ``pids`` hold open (vanished pids are skipped)."""
    found: dict[str, int] = {}
    for pid in pids:
        for fd in _entries(pid, "fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    found[target[len("socket:["):-1]] = pid
    return found


def _hex_address(text: str) -> str:
    """``0100007F:1F90`` (IPv4) or the 32-hex-digit IPv6 form of /proc/net/tcp* -> ``"127.0.0.1"``; an
    IPv4-mapped IPv6 address is given as its IPv4 address."""
    raw = bytes.fromhex(text.split(":")[0])
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))  # four host-order 32-bit words
    address = ipaddress.IPv6Address(words)
    return str(address.ipv4_mapped or address)


def listening_addresses(pids: list[int]) -> dict[str, int]:
    """Every address ``pids`` accept connections or datagrams on: TCP sockets in LISTEN and bound,
    unconnected UDP sockets, as ``"IP:PORT" -> pid``. Read from /proc/PID/net, so the pids must share
    one network namespace."""
    inodes = _socket_inodes(pids)
    out: dict[str, int] = {}
    if not inodes:
        return out
    net = Path(f"/proc/{next(iter(inodes.values()))}/net")
    for table, wanted_state in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        with contextlib.suppress(OSError):
            for line in (net / table).read_text().splitlines()[1:]:
                fields = line.split()
                port = int(fields[1].split(":")[1], 16)
                if fields[3] == wanted_state and fields[9] in inodes and port:
                    out[f"{_hex_address(fields[1])}:{port}"] = inodes[fields[9]]
    return out
