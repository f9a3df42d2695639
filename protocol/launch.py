"""How the orchestrator tells a worker process what to be: a launch spec passed as JSON.

``EngineSpec`` and ``WorkerLaunchSpec`` cross the process boundary (command line of
``python -m worker``), so they live here, with a strict JSON round trip.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class EngineSpec:
    """What a worker needs to build its engine. ``args`` are engine keyword arguments as given in the
    config (for vLLM: ``AsyncEngineArgs`` fields plus pdserve's transfer keys; for sim: the timing
    profile's fields). Values must be JSON-serialisable."""

    kind: str
    model: str
    worker_id: str
    role: str
    args: tuple[tuple[str, object], ...] = ()
    env: tuple[tuple[str, str], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class WorkerLaunchSpec:
    """One worker: its id, role (``prefill``/``decode``/``both``), gRPC bind address and engine."""

    worker_id: str
    role: str
    grpc_host: str
    grpc_port: int
    engine: EngineSpec

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerLaunchSpec:
        raw = json.loads(text)
        eng = raw["engine"]
        engine = EngineSpec(
            kind=eng["kind"], model=eng["model"], worker_id=eng["worker_id"], role=eng["role"],
            args=tuple((str(k), v) for k, v in eng["args"]),
            env=tuple((str(k), str(v)) for k, v in eng["env"]),
        )
        return cls(worker_id=raw["worker_id"], role=raw["role"], grpc_host=raw["grpc_host"],
                   grpc_port=int(raw["grpc_port"]), engine=engine)


READY_PREFIX = "PDSERVE_WORKER_READY "
