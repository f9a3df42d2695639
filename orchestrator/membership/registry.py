"""The registry of workers: who they are, where they run, and what state they are in.

A ``Member`` is one worker as the launcher started it (id, role, the process hosting it, its node and
addresses) plus its lifecycle ``phase``. Its ``state`` as operators see it combines the phase with the
pool's view of the worker (``WorkerHandle.healthy``): ``starting`` (its process is starting, or being
restarted), ``healthy``, ``draining`` (no new requests; in-flight ones finish), ``down`` (unreachable, or
its process died and is being restarted). Pure data; mutated by ``Membership`` on the event loop only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Phase = Literal["starting", "running", "restarting", "draining"]
State = Literal["starting", "healthy", "draining", "down"]


@dataclass
class Member:
    """One worker. ``process`` is the launch plan's name (several sim workers may share one);
    ``restarts`` counts restarts after a death; ``address`` is empty until the worker first reports."""

    worker_id: str
    role: str
    pool: str
    process: str
    phase: Phase = "starting"
    node: str = ""
    address: str = ""
    side_channel: str | None = None
    pid: int = 0
    restarts: int = 0
    last_error: str = ""


@dataclass(frozen=True)
class MemberView:
    """A member as ``GET /admin/workers`` shows it; ``model`` is the name of the model it serves."""

    worker_id: str
    model: str
    role: str
    pool: str
    state: State
    node: str
    address: str
    side_channel: str | None
    pid: int
    process: str
    restarts: int
    in_flight: int
    last_error: str


def state_of(member: Member, healthy: bool | None) -> State:
    """The operator's state of ``member``; ``healthy`` is its pool handle's health (None: not in a pool)."""
    if member.phase == "starting":
        return "starting"
    if member.phase == "restarting" or not healthy:
        return "down"
    return "draining" if member.phase == "draining" else "healthy"


@dataclass
class Registry:
    """Members by worker id, and the next free index per role (ids are never reused in one run)."""

    members: dict[str, Member] = field(default_factory=dict)
    next_index: dict[str, int] = field(default_factory=dict)

    def add(self, member: Member) -> None:
        self.members[member.worker_id] = member
        index = int(member.worker_id.rsplit("-", 1)[1])
        self.next_index[member.role] = max(self.next_index.get(member.role, 0), index + 1)

    def remove(self, worker_id: str) -> Member | None:
        return self.members.pop(worker_id, None)

    def of_pool(self, pool: str) -> list[Member]:
        """Members of ``pool``, by worker index."""
        found = [m for m in self.members.values() if m.pool == pool]
        return sorted(found, key=lambda m: int(m.worker_id.rsplit("-", 1)[1]))

    def of_process(self, process: str) -> list[Member]:
        return [m for m in self.members.values() if m.process == process]

    def take_indices(self, role: str, count: int) -> list[int]:
        """``count`` new worker indices for ``role`` (reserved: later calls get others)."""
        start = self.next_index.get(role, 0)
        self.next_index[role] = start + count
        return list(range(start, start + count))
