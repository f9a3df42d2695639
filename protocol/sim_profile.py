"""The simulated engine's profile: the one schema of its fields, and the profile YAML files.

``SimProfileFields`` is the single list of a simulated engine's knobs (capacity, scheduler limits,
pseudo-model, timing coefficients, transfer link, handoff), with their types, defaults and bounds.
``SimProfile`` is a complete, self-consistent profile: what a sim engine runs with.
``protocol.engine_args.SimArgs`` reuses the same fields as overrides of a named profile file.

A profile file is ``configs/sim-profiles/NAME.yaml`` (named by ``NAME``) or any path ending in
``.yaml``/``.yml``; it holds ``apiVersion: pdserve.sim/v1``, an optional ``description`` and profile
fields, and must be a valid profile on its own. Values are strict: an int field takes no float, bool
or string; a float field takes ints; YAML reads ``1.0e8`` as a string (write ``1.0e+8``).

This lives in protocol/ because both sides need it: the orchestrator validates profiles when its
config loads, and a sim worker builds its engine from one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PROFILE_DIR = Path(__file__).resolve().parents[1] / "configs" / "sim-profiles"
API_VERSION = "pdserve.sim/v1"


class SimProfileFields(BaseModel):
    """Every field of a simulated engine's profile. Durations are seconds at ``speedup == 1``.

    Step time (see ``worker.engines.sim.timing.step_time``)::

        step_base_s + prefill_per_token_s * new_prefill_tokens
                    + prefill_attn_per_pair_s * (query, key) pairs of those tokens
                    + decode_per_seq_s * decode_seqs + decode_per_ctx_token_s * decode context tokens

    KV pull time: ``link_latency_s + bytes / link_bandwidth_bytes_per_s``. Every modelled duration is
    divided by ``speedup``; ``lease_timeout_s`` is a wall-clock protocol timeout and is not.
    ``eos_probability`` is the chance that the pseudo-model emits ``eos_token_id`` at a position.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    model: str = "sim-model"
    # capacity
    block_size: int = Field(default=16, gt=0)
    num_blocks: int = Field(default=1024, gt=0)
    max_model_len: int = Field(default=4096, gt=0)
    kv_bytes_per_token: int = Field(default=131072, gt=0)
    enable_prefix_caching: bool = True
    # scheduler
    max_num_seqs: int = Field(default=256, gt=0)
    max_num_batched_tokens: int = Field(default=2048, gt=0)
    # pseudo-model
    vocab_size: int = Field(default=32000, gt=0)
    eos_token_id: int = Field(default=2, ge=0)
    eos_probability: float = Field(default=0.0, ge=0.0, le=1.0)
    seed: int = 0
    # timing
    step_base_s: float = Field(default=0.005, ge=0)
    prefill_per_token_s: float = Field(default=3e-5, ge=0)
    prefill_attn_per_pair_s: float = Field(default=0.0, ge=0)
    decode_per_seq_s: float = Field(default=4e-5, ge=0)
    decode_per_ctx_token_s: float = Field(default=5e-8, ge=0)
    link_bandwidth_bytes_per_s: float = Field(default=4e10, gt=0)
    link_latency_s: float = Field(default=5e-4, ge=0)
    speedup: float = Field(default=1.0, gt=0)
    # handoff
    lease_timeout_s: float = Field(default=30.0, gt=0)
    handoff_host: str = "127.0.0.1"
    handoff_port: int = Field(default=0, ge=0)


class SimProfile(SimProfileFields):
    """A complete profile (frozen): the fields above plus the checks that involve several of them."""

    @model_validator(mode="after")
    def _eos_in_vocabulary(self) -> SimProfile:
        if self.eos_token_id >= self.vocab_size:
            raise ValueError(f"eos_token_id {self.eos_token_id} must be < vocab_size {self.vocab_size}")
        return self

    @property
    def effective_max_model_len(self) -> int:
        """``max_model_len`` capped by the pool, so one sequence alone always fits in the cache."""
        return min(self.max_model_len, self.num_blocks * self.block_size)


class ProfileFileError(ValueError):
    """A profile file that is missing or invalid; ``problems`` lists each one (``key: message``)."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"sim profile {path}: " + "; ".join(problems))


def profile_path(name: str) -> Path:
    """Where the profile ``name`` lives: a path if it ends in ``.yaml``/``.yml``, else in ``PROFILE_DIR``."""
    return Path(name).expanduser() if name.endswith((".yaml", ".yml")) else PROFILE_DIR / f"{name}.yaml"


def known_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def read_profile(name: str) -> dict[str, Any]:
    """The fields the profile file ``name`` sets, after checking it is a valid profile on its own.

    Raises ``ProfileFileError`` listing every problem (file missing, not a mapping, wrong apiVersion,
    unknown keys, ill-typed or out-of-range values).
    """
    path = profile_path(name)
    if not path.is_file():
        raise ProfileFileError(path, [f"not found (known profiles: {', '.join(known_profiles())})"])
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProfileFileError(path, [f"<yaml>: {exc}"]) from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ProfileFileError(path, ["expected a mapping at top level"])
    fields = {str(k): v for k, v in raw.items() if k not in ("apiVersion", "description")}
    problems = []
    version = raw.get("apiVersion", API_VERSION)
    if version != API_VERSION:
        problems.append(f"apiVersion: must be {API_VERSION!r}, got {version!r}")
    try:
        SimProfile.model_validate(fields)
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "<profile>"
            problems.append(f"{where}: {err['msg']}")
    if problems:
        raise ProfileFileError(path, problems)
    return fields
