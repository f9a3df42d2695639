"""Which workers this orchestrator can talk to: the same wire version (``protocol.types.WIRE_VERSION``)."""

from __future__ import annotations

from protocol.types import WIRE_VERSION, WorkerDescription


class IncompatibleWorker(RuntimeError):
    """A worker speaks another wire version than this orchestrator; it is refused at registration."""

    def __init__(self, worker_id: str, worker_version: int, expected: int = WIRE_VERSION) -> None:
        self.worker_id = worker_id
        self.worker_version = worker_version
        self.expected = expected
        super().__init__(
            f"worker {worker_id} speaks wire version {worker_version}, this orchestrator speaks {expected}; "
            "run workers and orchestrator from the same pdserve build")


def check_compatible(description: WorkerDescription) -> WorkerDescription:
    """``description`` unchanged when its ``wire_version`` is ``WIRE_VERSION``; else ``IncompatibleWorker``."""
    if description.wire_version != WIRE_VERSION:
        raise IncompatibleWorker(description.worker_id, description.wire_version)
    return description
