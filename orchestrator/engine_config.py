"""The config's ``engine`` section and the pools' ``engine_args``, typed per engine kind.

``engine`` is a union selected by ``engine.kind`` (default ``vllm``): ``VllmEngineConfig`` carries
``protocol.engine_args.VllmArgs``, ``SimEngineConfig`` carries ``SimArgs``. A pool's ``engine_args``
(overrides for that pool's workers) are validated as the same kind's model: before validation the
engine's kind is written into each pool's ``engine_args`` mapping, after it the pools are checked
against the engine (same kind; for sim, the combined arguments must give a valid profile).

Union tags start with ``<`` so that error paths leave them out: a typo is reported as
``engine.args.max_num_seqz`` or ``prefill.engine_args.max_num_seqz``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from protocol.engine_args import ENGINE_KINDS, SimArgs, VllmArgs, merge_args
from protocol.sim_topology import SimTopology


class StrictConfig(BaseModel):
    """A config section: unknown keys fail, and it is frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class VllmEngineConfig(StrictConfig):
    """vLLM engines (the default kind): ``args`` are typed ``AsyncEngineArgs`` fields plus
    ``extra_args``; ``env`` is set in every worker process before vLLM starts."""

    kind: Literal["vllm"] = "vllm"
    args: VllmArgs = Field(default_factory=VllmArgs)
    env: dict[str, str] = Field(default_factory=dict)


class SimEngineConfig(StrictConfig):
    """Simulated engines: ``args`` name a sim profile and override its fields. ``topology`` (None: every
    worker on 127.0.0.1 with a link of its own) puts the workers on loopback hosts in racks, one NIC per
    host shared by its workers, slower links between racks (``protocol.sim_topology``)."""

    kind: Literal["sim"]
    args: SimArgs = Field(default_factory=SimArgs)
    env: dict[str, str] = Field(default_factory=dict)
    topology: SimTopology | None = None


def _kind_tag(value: Any, default: str | None = None) -> str | None:
    """The union tag of a raw mapping (its ``kind``, else ``default``) or of a validated model."""
    kind = value.get("kind", default) if isinstance(value, dict) else getattr(value, "kind", None)
    return f"<{kind}>" if kind in ENGINE_KINDS else None


EngineConfig = Annotated[
    Annotated[VllmEngineConfig, Tag("<vllm>")] | Annotated[SimEngineConfig, Tag("<sim>")],
    Discriminator(lambda value: _kind_tag(value, "vllm"), custom_error_type="engine_kind",
                  custom_error_message=f"unknown engine kind; expected kind: one of {', '.join(ENGINE_KINDS)}"),
]

EngineArgsOverride = Annotated[
    Annotated[VllmArgs, Tag("<vllm>")] | Annotated[SimArgs, Tag("<sim>")],
    Discriminator(_kind_tag, custom_error_type="engine_kind",
                  custom_error_message="engine args of an unknown engine kind (see engine.kind)"),
]


def _describe(loc: tuple[str | int, ...], message: str) -> str:
    message = message.removeprefix("Value error, ")
    return f"{'.'.join(map(str, loc))}: {message}" if loc else message


def pool_args_follow_engine_kind(data: Any, pools: tuple[str, ...]) -> Any:
    """Before validation: a copy of the raw config in which each pool's ``engine_args`` mapping carries
    the engine's kind (unless it names one itself), so it validates as that kind's model."""
    if not isinstance(data, dict):
        return data
    engine = data.get("engine")
    kind = engine.get("kind", "vllm") if isinstance(engine, dict) else getattr(engine, "kind", "vllm")
    out = dict(data)
    for name in pools:
        pool = out.get(name)
        if isinstance(pool, dict) and isinstance(pool.get("engine_args"), dict):
            out[name] = {**pool, "engine_args": {"kind": kind, **pool["engine_args"]}}
    return out


def pool_args_problems(engine_args: VllmArgs | SimArgs, pools: Mapping[str, VllmArgs | SimArgs | None]) -> None:
    """After validation: raise a ``ValidationError`` (one line per problem, at the pool's path) if a
    pool's ``engine_args`` are of another kind than the engine's, or, for sim, if the engine's and the
    pool's arguments together do not give a valid profile (e.g. ``eos_token_id >= vocab_size``)."""
    problems: dict[tuple[str, ...], str] = {}
    for name, override in pools.items():
        loc = (name, "engine_args") if override is not None else ("engine", "args")
        if override is not None and override.kind != engine_args.kind:
            problems[(name, "engine_args", "kind")] = f"must match engine.kind {engine_args.kind!r}"
            continue
        merged = merge_args(engine_args, override)
        if not isinstance(merged, SimArgs):
            continue
        try:
            merged.resolve()
        except ValidationError as exc:
            found = "; ".join(_describe(e["loc"], e["msg"]) for e in exc.errors())
            problems[loc] = f"the sim profile these arguments give is invalid: {found}"
        except ValueError as exc:  # the profile file changed since it was validated
            problems[loc] = str(exc)
    if problems:
        raise ValidationError.from_exception_data("PdserveConfig", [
            InitErrorDetails(type=PydanticCustomError("engine_args", "{detail}", {"detail": message}), loc=loc,
                             input=None)
            for loc, message in problems.items()])


def topology_problems(topology: SimTopology, pools: Mapping[str, tuple[int, VllmArgs | SimArgs]],
                      pinned_host: bool) -> None:
    """After validation: raise ``ValueError`` if a config with a sim ``topology`` also pins the workers'
    address (``pinned_host``: ``network.worker_host`` or ``worker_interface``), splits a host's workers over
    processes (a pool's ``workers_per_process``, the first of each ``pools`` value, not a multiple of
    ``workers_per_host``: NICs are shared within a process) or sets a ``handoff_host`` in a pool's engine
    arguments (the topology names each worker's host)."""
    if pinned_host:
        raise ValueError("engine.topology gives each simulated worker its host: leave network.worker_host "
                         "and network.worker_interface unset")
    for name, (per_process, args) in pools.items():
        if per_process % topology.workers_per_host:
            raise ValueError(f"{name}.workers_per_process ({per_process}) must be a multiple of "
                             f"engine.topology.workers_per_host ({topology.workers_per_host}): the workers of a "
                             "host share its NIC only within one process")
        if isinstance(args, SimArgs) and "handoff_host" in args.model_fields_set:
            raise ValueError(f"engine.topology names each worker's handoff host: the engine args of {name} "
                             "must not set handoff_host")
