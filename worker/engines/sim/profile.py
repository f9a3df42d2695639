"""The simulated engine's profile: capacity, scheduler limits, timing coefficients, transfer link.

A profile is a frozen record built from ``EngineSpec.args``: the optional ``profile`` key names a YAML
file (``configs/sim-profiles/NAME.yaml``, or a path ending in ``.yaml``) whose fields are the base,
and every other key overrides one field. Unknown keys and ill-typed values fail, all reported at once.
``kv_lease_s`` is accepted as an alias of ``lease_timeout_s`` (the vLLM adapter's name for it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

PROFILE_DIR = Path(__file__).resolve().parents[3] / "configs" / "sim-profiles"
API_VERSION = "pdserve.sim/v1"
_ALIASES = {"kv_lease_s": "lease_timeout_s"}


@dataclass(frozen=True)
class SimProfile:
    """Everything that shapes one simulated engine. Durations are seconds at ``speedup == 1``.

    Step time (see ``timing.step_time``)::

        step_base_s + prefill_per_token_s * new_prefill_tokens
                    + prefill_attn_per_pair_s * (query, key) pairs of those tokens
                    + decode_per_seq_s * decode_seqs + decode_per_ctx_token_s * decode context tokens

    KV pull time: ``link_latency_s + bytes / link_bandwidth_bytes_per_s``. Every modelled duration is
    divided by ``speedup``; ``lease_timeout_s`` is a wall-clock protocol timeout and is not.
    ``eos_probability`` is the chance that the pseudo-model emits ``eos_token_id`` at a position.
    """

    model: str = "sim-model"
    # capacity
    block_size: int = 16
    num_blocks: int = 1024
    max_model_len: int = 4096
    kv_bytes_per_token: int = 131072
    enable_prefix_caching: bool = True
    # scheduler
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    # pseudo-model
    vocab_size: int = 32000
    eos_token_id: int = 2
    eos_probability: float = 0.0
    seed: int = 0
    # timing
    step_base_s: float = 0.005
    prefill_per_token_s: float = 3e-5
    prefill_attn_per_pair_s: float = 0.0
    decode_per_seq_s: float = 4e-5
    decode_per_ctx_token_s: float = 5e-8
    link_bandwidth_bytes_per_s: float = 4e10
    link_latency_s: float = 5e-4
    speedup: float = 1.0
    # handoff
    lease_timeout_s: float = 30.0
    handoff_host: str = "127.0.0.1"
    handoff_port: int = 0

    def __post_init__(self) -> None:
        errors = []
        for name in ("block_size", "num_blocks", "max_model_len", "kv_bytes_per_token", "max_num_seqs",
                     "max_num_batched_tokens", "vocab_size", "speedup", "link_bandwidth_bytes_per_s",
                     "lease_timeout_s"):
            if getattr(self, name) <= 0:
                errors.append(f"{name}: must be > 0, got {getattr(self, name)!r}")
        for name in ("step_base_s", "prefill_per_token_s", "prefill_attn_per_pair_s", "decode_per_seq_s",
                     "decode_per_ctx_token_s", "link_latency_s", "handoff_port"):
            if getattr(self, name) < 0:
                errors.append(f"{name}: must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.eos_probability <= 1.0:
            errors.append(f"eos_probability: must be in [0, 1], got {self.eos_probability!r}")
        if not 0 <= self.eos_token_id < self.vocab_size:
            errors.append(f"eos_token_id: must be in [0, vocab_size), got {self.eos_token_id!r}")
        if errors:
            raise ValueError("invalid sim profile:\n  " + "\n  ".join(errors))

    @property
    def effective_max_model_len(self) -> int:
        """``max_model_len`` capped by the pool, so one sequence alone always fits in the cache."""
        return min(self.max_model_len, self.num_blocks * self.block_size)


_FIELDS = {f.name: f for f in dataclasses.fields(SimProfile)}


def _check_value(name: str, value: object) -> tuple[object, str | None]:
    """Coerce ``value`` to the field's type (int -> float allowed); return (value, error)."""
    kind = _FIELDS[name].type
    if kind == "bool":
        return (value, None) if isinstance(value, bool) else (value, f"{name}: expected bool, got {value!r}")
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value, None
        return value, f"{name}: expected int, got {value!r}"
    if kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value), None
        hint = " (YAML reads 1.0e8 as a string: write 1.0e+8)" if isinstance(value, str) else ""
        return value, f"{name}: expected number, got {value!r}{hint}"
    return (value, None) if isinstance(value, str) else (value, f"{name}: expected string, got {value!r}")


def _read_yaml(name: str) -> dict[str, object]:
    path = Path(name) if name.endswith((".yaml", ".yml")) else PROFILE_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise ValueError(f"sim profile {name!r} not found at {path}; known: {known}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"sim profile {path}: expected a mapping at top level")
    version = raw.pop("apiVersion", API_VERSION)
    if version != API_VERSION:
        raise ValueError(f"sim profile {path}: apiVersion must be {API_VERSION!r}, got {version!r}")
    raw.pop("description", None)
    return {str(k): v for k, v in raw.items()}


def load_profile(args: Mapping[str, object] | tuple[tuple[str, object], ...] = ()) -> SimProfile:
    """Build a profile from engine args: ``profile`` (YAML name or path) as base, other keys override.

    Raises ``ValueError`` listing every unknown key and ill-typed value, each with where it came from.
    """
    given = dict(args)
    base: dict[str, object] = {}
    source = {}
    profile_name = given.pop("profile", None)
    if profile_name is not None:
        if not isinstance(profile_name, str):
            raise ValueError(f"profile: expected a profile name, got {profile_name!r}")
        base = _read_yaml(profile_name)
        source = {k: f"profile {profile_name!r}" for k in base}
    for key, value in given.items():
        base[key] = value
        source[key] = "engine args"
    values: dict[str, object] = {}
    errors = []
    for key, value in base.items():
        name = _ALIASES.get(key, key)
        if name not in _FIELDS:
            errors.append(f"{key} ({source[key]}): unknown sim profile field")
            continue
        coerced, error = _check_value(name, value)
        if error:
            errors.append(f"{error} ({source[key]})")
        values[name] = coerced
    if errors:
        raise ValueError("invalid sim engine args:\n  " + "\n  ".join(errors))
    return SimProfile(**values)  # type: ignore[arg-type]
