"""pdserve's configuration: one YAML file, parsed into frozen pydantic models.

Order of precedence: model defaults -> the YAML file -> explicit overrides (``--set a.b=c`` on the
command line) -> validation of the whole. Unknown keys fail; every error is reported at once with its
path (``ConfigError``). The models carry no behaviour beyond small derived values.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from orchestrator.engine_config import (
    EngineArgsOverride,
    EngineConfig,
    StrictConfig,
    VllmEngineConfig,
    pool_args_follow_engine_kind,
    pool_args_problems,
    topology_problems,
)
from orchestrator.scheduler.disagg_policy import DisaggPolicy
from orchestrator.scheduler.profiles import PRESETS, PoolProfile, preset
from protocol.engine_args import SimArgs, VllmArgs, merge_args
from transfer.nixl_env import TransferSettings

POOLS = ("prefill", "decode")


class AdapterConfig(StrictConfig):
    """A LoRA adapter served by the model's pools (vLLM engines only): ``name`` is what clients send as
    ``model`` to use it, ``path`` a PEFT folder (``adapter_config.json`` + weights) on every worker's node;
    ``prepare: tiny-lora`` builds the test adapter of the tiny model there once."""

    name: str = Field(min_length=1)
    path: str
    prepare: Literal["tiny-lora"] | None = None

    @property
    def resolved_path(self) -> Path:
        return Path(os.path.expandvars(self.path)).expanduser()


class ModelConfig(StrictConfig):
    """The served model. ``name`` is what clients send as ``model``; ``path`` a local HF folder.
    ``key``: the model's short name in worker and process ids (``{key}.prefill-0``) when one front end
    serves several models (``orchestrator.deployment`` fills it in from the name when unset); None for a
    deployment of one model, whose ids stay ``prefill-0``. ``adapters``: LoRA adapters its vLLM workers
    serve, each listed by ``/v1/models`` and picked by its own name."""

    name: str
    path: str
    prepare: Literal["smollm2", "tiny"] | None = None
    key: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=40)
    adapters: tuple[AdapterConfig, ...] = ()

    @model_validator(mode="after")
    def _adapter_names_are_their_own(self) -> ModelConfig:
        names = [a.name for a in self.adapters]
        for name in sorted({n for n in names if names.count(n) > 1 or n == self.name}):
            raise ValueError(f"adapter name {name!r} is used twice (by another adapter or the model)")
        return self

    @property
    def resolved_path(self) -> Path:
        return Path(os.path.expandvars(self.path)).expanduser()


class Resources(StrictConfig):
    """Ray resources per replica. On a CPU-only cluster keep ``num_gpus`` at 0 (a GPU ask pends forever).

    ``custom``: Ray custom resources the replica needs (a node started with ``--resources
    '{"prefill_node": 1}'`` takes replicas asking ``{prefill_node: 0.01}``). ``node_labels``: Ray node
    labels the replica's node must carry (``ray start --labels pdserve-pool=prefill``; Ray's
    ``label_selector``, values may use its operators such as ``!gpu`` or ``in(a,b)``)."""

    num_cpus: float = 0.0
    num_gpus: float = 0.0
    memory_gb: float | None = None
    custom: dict[str, float] = Field(default_factory=dict)
    node_labels: dict[str, str] = Field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """True when the replica asks for no countable resource (a placement-group bundle needs one)."""
        return not (self.num_cpus or self.num_gpus or self.memory_gb or any(self.custom.values()))


def _profile_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "<preset>"
    return "<profile>" if isinstance(value, dict | PoolProfile) else None


# A preset name or an explicit profile, told apart by the value's type, so an error inside an explicit
# profile is reported at its own path (the tags start with "<" and are left out of error paths).
ProfileChoice = Annotated[
    Annotated[str, Tag("<preset>")] | Annotated[PoolProfile, Tag("<profile>")],
    Discriminator(_profile_kind, custom_error_type="profile_type",
                  custom_error_message="expected a preset name or a profile mapping"),
]


class RoutingConfig(StrictConfig):
    """The pool's scheduling profile: a preset name (``orchestrator.scheduler.profiles.PRESETS``) or an
    explicit profile (filters -> weighted scorers -> picker)."""

    profile: ProfileChoice = "round_robin"
    seed: int = 0

    @field_validator("profile")
    @classmethod
    def _known_preset(cls, value: str | PoolProfile) -> str | PoolProfile:
        if isinstance(value, str) and value not in PRESETS:
            raise ValueError(f"unknown routing preset {value!r}; known: {', '.join(sorted(PRESETS))}")
        return value

    def resolve(self) -> PoolProfile:
        return preset(self.profile) if isinstance(self.profile, str) else self.profile


class PoolConfig(StrictConfig):
    """One pool of workers. ``engine_args`` override ``engine.args`` for this pool's workers; they are
    typed like ``engine.args`` (the engine's kind) and reported at their own path."""

    replicas: int = Field(default=1, ge=0)
    resources: Resources = Resources()
    # Ray placement of the pool's replicas: None leaves it to Ray's default scheduler; SPREAD spreads them
    # over nodes; PACK / STRICT_PACK / STRICT_SPREAD reserve a placement group with one bundle (the
    # replica's resources, which must not be empty) per configured replica. Replicas added by scaling
    # past the group are placed by Ray's default scheduler.
    placement: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] | None = None
    engine_args: EngineArgsOverride | None = None
    workers_per_process: int = Field(default=1, ge=1)
    routing: RoutingConfig = RoutingConfig()
    queue_bound: int = Field(default=64, ge=1)


class IndexConfig(StrictConfig):
    """Prefix index: ``events`` (fed by the engines' KV events) or ``approximate`` (insert on routing)."""

    mode: Literal["events", "approximate"] = "events"
    approx_capacity_blocks: int = Field(default=100_000, ge=1)
    approx_ttl_s: float = Field(default=600.0, gt=0)


class ServerConfig(StrictConfig):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    request_timeout_s: float = Field(default=300.0, gt=0)
    prefill_timeout_s: float = Field(default=120.0, gt=0)
    first_token_timeout_s: float = Field(default=120.0, gt=0)
    inter_token_timeout_s: float = Field(default=60.0, gt=0)
    worker_start_timeout_s: float = Field(default=600.0, gt=0)
    load_poll_interval_s: float = Field(default=0.5, gt=0)
    # Requests admitted at once (streams included); past it a request gets 429 with Retry-After, never a
    # queue. None: unbounded.
    max_in_flight: int | None = Field(default=4096, ge=1)


class AuthConfig(StrictConfig):
    """API keys (``orchestrator.auth``). ``keys_file``: the JSONL file ``pdserve keys add`` writes; unset,
    authentication is off. ``protect_metrics`` / ``protect_health``: require an admin key there too."""

    keys_file: str | None = None
    protect_metrics: bool = False
    protect_health: bool = False


class LimitsConfig(StrictConfig):
    """Bounds on one HTTP request, checked before any work is done for it (``orchestrator.api.limits``).
    ``max_body_bytes``: the request body (413 past it, counted as it streams in); ``max_messages``,
    ``max_stop`` (OpenAI allows 4), ``max_stop_chars`` (each stop string); ``max_prompt_chars``: the
    characters of a completion prompt or of all chat messages together, checked before templating;
    ``default_max_tokens``: the completion budget of a request that sets no ``max_tokens`` (never more
    than the rest of the context); ``tokenize_threads``: the pool that templates and tokenizes off the
    event loop."""

    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_messages: int = Field(default=256, ge=1)
    max_stop: int = Field(default=4, ge=0)
    max_stop_chars: int = Field(default=256, ge=1)
    max_prompt_chars: int = Field(default=1_000_000, ge=1)
    default_max_tokens: int = Field(default=2048, ge=1)
    tokenize_threads: int = Field(default=2, ge=1)


class CpuConfig(StrictConfig):
    """Cores of vLLM workers on CPU hosts (``transfer.device: cpu``). ``bind: auto`` gives each worker
    of a host its own disjoint cores (``worker.cpu_share``), keeping ``frontend_cores`` for the front end
    while every worker still gets one; ``none`` leaves binding to vLLM (which, left on its ``auto``, put
    two engines' compute threads on one core of a 2-core host). A ``VLLM_CPU_OMP_THREADS_BIND`` set in
    ``engine.env`` replaces the whole computed share (no pinning)."""

    bind: Literal["auto", "none"] = "auto"
    frontend_cores: int = Field(default=1, ge=0)
    # How many vLLM workers split the host, and the slot of this model's first one. None: this model's
    # configured workers alone. A deployment of several models sets them so that every model's workers
    # get cores of their own (``orchestrator.deployment``); set them by hand only to run two pdserve
    # deployments side by side on one host.
    host_slots: int | None = Field(default=None, ge=1)
    slot_offset: int = Field(default=0, ge=0)


class NetworkConfig(StrictConfig):
    """Where workers bind their gRPC server, NIXL side channel and (sim) handoff listener: ``worker_host``
    an explicit address for all of them (``0.0.0.0`` only if you mean it), else ``worker_interface``'s
    address on each worker's node, else the node's address as Ray sees it (127.0.0.1 with the embedded
    Ray or the local launcher). Ports are chosen on the worker's node by the worker itself."""

    worker_host: str | None = None
    worker_interface: str | None = None


class RayConfig(StrictConfig):
    address: str | None = None
    namespace: str = "pdserve"
    num_cpus: int | None = None


class PdserveConfig(StrictConfig):
    apiVersion: Literal["pdserve/v1"]
    model: ModelConfig
    engine: EngineConfig = Field(default_factory=VllmEngineConfig)
    prefill: PoolConfig = PoolConfig()
    decode: PoolConfig = PoolConfig()
    colocated: bool = False
    disaggregation: DisaggPolicy = DisaggPolicy(min_remote_tokens=0)
    index: IndexConfig = IndexConfig()
    transfer: TransferSettings = TransferSettings()
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    limits: LimitsConfig = LimitsConfig()
    cpu: CpuConfig = CpuConfig()
    network: NetworkConfig = NetworkConfig()
    ray: RayConfig = RayConfig()

    @field_validator("decode")
    @classmethod
    def _decode_needs_a_worker(cls, pool: PoolConfig) -> PoolConfig:
        if pool.replicas < 1:
            raise ValueError("the decode pool needs at least one replica")
        return pool

    @model_validator(mode="after")
    def _adapters_need_vllm(self) -> PdserveConfig:
        if self.model.adapters and self.engine.kind != "vllm":
            raise ValueError(f"model.adapters: LoRA adapters need vLLM workers (engine.kind is {self.engine.kind})")
        return self

    @model_validator(mode="after")
    def _placement_groups_need_resources(self) -> PdserveConfig:
        for name in POOLS:
            pool: PoolConfig = getattr(self, name)
            if pool.placement not in (None, "SPREAD") and pool.resources.empty:
                raise ValueError(f"{name}.placement {pool.placement} reserves a placement group: "
                                 f"{name}.resources must ask for something (num_cpus, num_gpus or custom)")
        return self

    @model_validator(mode="after")
    def _topology_places_the_workers(self) -> PdserveConfig:
        topology = getattr(self.engine, "topology", None)
        if topology is not None:
            pools = ("decode",) if self.colocated else POOLS
            topology_problems(topology, {name: (getattr(self, name).workers_per_process,
                                                self.engine_args_for(getattr(self, name))) for name in pools},
                              pinned_host=bool(self.network.worker_host or self.network.worker_interface))
        return self

    @model_validator(mode="before")
    @classmethod
    def _pool_args_follow_engine_kind(cls, data: Any) -> Any:
        return pool_args_follow_engine_kind(data, POOLS)

    @model_validator(mode="after")
    def _pool_args_fit_the_engine(self) -> PdserveConfig:
        pool_args_problems(self.engine.args, {name: getattr(self, name).engine_args for name in POOLS})
        return self

    @property
    def worker_prefix(self) -> str:
        """What this model's worker and process ids start with: ``{model.key}.``, or nothing for a
        deployment of one model."""
        return f"{self.model.key}." if self.model.key else ""

    def engine_args_for(self, pool: PoolConfig) -> VllmArgs | SimArgs:
        """The engine arguments of ``pool``'s workers: ``engine.args`` with the pool's overrides."""
        return merge_args(self.engine.args, pool.engine_args)


class ConfigError(ValueError):
    """Every problem in a config file, one per line, each with its path (``prefill.replicas: ...``)."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree``'s value at ``dotted`` (mutated); a number steps into a list (``models.0.prefill``)."""
    keys = dotted.split(".")
    node: Any = tree
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(node, list):
            if not (key.isdigit() and int(key) < len(node)):
                raise ConfigError("--set", [f"{dotted}: {key} is not an index of a list of {len(node)}"])
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        else:
            raise ConfigError("--set", [f"{dotted}: {keys[depth - 1]} is not a mapping"])


def with_overrides(raw: Any, source: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of the loaded YAML tree with the dotted overrides set (the caller's tree is not written)."""
    if not isinstance(raw, dict):
        raise ConfigError(source, ["<root>: expected a mapping"])
    tree = copy.deepcopy(raw)
    for dotted, value in (overrides or {}).items():
        _set_path(tree, dotted, value)
    return tree


def validate_config(tree: dict[str, Any], source: str, at: str = "") -> PdserveConfig:
    """Validate one model's tree; ``ConfigError`` lists every problem, its path prefixed with ``at``."""
    try:
        return PdserveConfig.model_validate(tree)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = ".".join(str(p) for p in err["loc"] if not str(p).startswith("<")) or "<root>"
            problems.append(f"{at}{path}: {err['msg']}")
        raise ConfigError(source, problems) from None


def parse_config(raw: Any, source: str = "<config>", overrides: dict[str, Any] | None = None) -> PdserveConfig:
    """Validate a loaded YAML tree of one model (plus dotted overrides); raise ``ConfigError`` listing all
    errors. A tree with ``models:`` is a deployment of several: ``orchestrator.deployment`` reads it."""
    return validate_config(with_overrides(raw, source, overrides), source)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> PdserveConfig:
    """Read and validate a YAML config file."""
    text = Path(path).read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"<yaml>: {exc}"]) from None
    return parse_config(raw, str(path), overrides)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a.b=3", "c=x"]`` -> ``{"a.b": 3, "c": "x"}`` (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError("--set", [f"{item!r}: expected KEY=VALUE"])
        out[key.strip()] = yaml.safe_load(value)
    return out
