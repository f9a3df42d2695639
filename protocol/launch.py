"""How the orchestrator tells a worker process what to be: a launch spec passed as JSON.

``EngineSpec`` and ``WorkerLaunchSpec`` cross the process boundary (command line of
``python -m worker``), so they live here, as frozen pydantic models with a strict JSON round trip
(``to_json``/``from_json``): the worker re-validates everything it is given.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from protocol.engine_args import EngineArgs
from protocol.sim_topology import SimTopology


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CpuShare(_Frozen):
    """A worker's share of its host's cores: slot ``slot`` of ``slots`` workers that split the host,
    keeping ``frontend_cores`` for the front end while every worker still gets one. The worker turns
    it into a core list from its own node's cores (``worker.cpu_share``)."""

    slot: int = Field(ge=0)
    slots: int = Field(ge=1)
    frontend_cores: int = Field(default=1, ge=0)


class AdapterSpec(_Frozen):
    """A LoRA adapter a vLLM worker serves: ``name`` is what calls and KV events name it (vLLM's
    ``lora_name``), ``adapter_id`` vLLM's ``lora_int_id`` (unique on the worker), ``path`` its PEFT folder
    on the worker's node."""

    name: str = Field(min_length=1)
    adapter_id: int = Field(ge=1)
    path: str


class EngineSpec(_Frozen):
    """What a worker needs to build its engine.

    ``args``: the engine's typed arguments (``protocol.engine_args``; their ``kind`` picks the adapter).
    ``env``: process environment set before the engine starts (NIXL side channel, UCX, vLLM CPU).
    The rest is what the launcher decides per worker; None leaves the engine's own default:

    * ``lease_timeout_s``: how long a prefill holds a prompt's KV blocks for the decode side (vLLM's
      ``kv_lease_duration``, default 30 s; for sim, the profile's unless ``args`` sets it).
    * ``kv_buffer_device``: vLLM only, NixlConnector's ``kv_buffer_device``.
    * ``events_endpoint``: vLLM only, the ZMQ endpoint its KV events are published on (default: a
      per-process ipc path).
    * ``cpu_share``: vLLM on CPU only, the cores this worker computes on (None: vLLM's own binding).
    * ``handoff_host``: sim only, the host its handoffs name (the profile's unless ``args`` sets it). A
      sim engine's KV link is its profile's ``link_bandwidth_bytes_per_s`` (``args`` may override it).
    * ``adapters``: vLLM only, the LoRA adapters the engine serves besides the base model (LoRA is
      enabled, with room for all of them in one batch, when there is any).
    * ``sim_topology``: sim only, the fleet's hosts and racks (``protocol.sim_topology``): pulls into one
      host share its NIC, and pulls between racks are slower. None: every pull has a link of its own.
    """

    model: str
    worker_id: str
    role: str
    args: EngineArgs
    env: tuple[tuple[str, str], ...] = ()
    lease_timeout_s: float | None = Field(default=None, gt=0)
    kv_buffer_device: Literal["cpu", "cuda"] = "cpu"
    events_endpoint: str | None = None
    handoff_host: str | None = None
    cpu_share: CpuShare | None = None
    sim_topology: SimTopology | None = None
    adapters: tuple[AdapterSpec, ...] = ()

    @property
    def kind(self) -> str:
        """The engine kind (``vllm`` or ``sim``): the adapter ``worker.engine.build_engine`` builds."""
        return self.args.kind


class WorkerLaunchSpec(_Frozen):
    """One worker: its id, role (``prefill``/``decode``/``both``), where it binds, and its engine.

    ``grpc_host``: the address its gRPC server binds and reports; None: its own node's address, found
    on the node itself (``worker.node_address``): the NIC named by ``interface``, else the address the
    launcher found for the node (``PDSERVE_NODE_IP``), else 127.0.0.1. The NIXL side channel and the
    simulated engine's handoff listener bind the same address unless the spec names theirs.
    ``grpc_port``: 0 lets the kernel choose (the worker reports the port it got).
    """

    worker_id: str
    role: str
    grpc_port: int
    engine: EngineSpec
    grpc_host: str | None = None
    interface: str | None = None

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> WorkerLaunchSpec:
        """Parse and validate strictly; raises ``pydantic.ValidationError``."""
        return cls.model_validate_json(text, strict=True)


class WorkerReady(_Frozen):
    """What a started worker reports on its ready line: where it serves gRPC (``address``), the address
    of its node it bound (``node``), its NIXL side channel (``host:port``; None for the sim engine) and
    its process id."""

    worker_id: str
    address: str
    node: str
    pid: int
    side_channel: str | None = None


READY_PREFIX = "PDSERVE_WORKER_READY "
