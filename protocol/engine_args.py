"""Typed engine arguments, one model per engine kind, shared by the config and the workers.

``EngineArgs`` is a union discriminated by ``kind``: ``VllmArgs`` (kind ``vllm``) or ``SimArgs``
(kind ``sim``). The orchestrator validates them when its config loads (so a typo fails
``pdserve config check`` with its path); they then travel inside ``protocol.launch.EngineSpec`` as
JSON and are validated again, strictly, by the worker. All models are frozen, reject unknown keys and
take values strictly (no string -> number coercion).

Pool-level overrides (``prefill.engine_args``) are the same models: for vLLM every field is optional;
for sim an override is any field given. ``merge_args`` lays an override over the engine's arguments.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from protocol.sim_profile import ProfileFileError, SimProfile, SimProfileFields, read_profile

ENGINE_KINDS = ("vllm", "sim")
# AsyncEngineArgs fields that pdserve's vLLM adapter sets itself; ``extra_args`` may not name them.
VLLM_ARGS_SET_BY_PDSERVE = frozenset(
    {"model", "enable_prefix_caching", "kv_transfer_config", "kv_events_config", "disable_log_stats"})


def _problems(title: str, problems: Iterable[tuple[tuple[str | int, ...], str]]) -> ValidationError:
    """A ValidationError with one line per ``(loc, message)``; raised inside a validator, pydantic
    prefixes each loc with the validated field's own path."""
    return ValidationError.from_exception_data(title, [
        InitErrorDetails(type=PydanticCustomError("engine_args", "{detail}", {"detail": message}), loc=loc,
                         input=None)
        for loc, message in problems])


@functools.cache
def vllm_engine_arg_names() -> frozenset[str] | None:
    """The field names of the installed vLLM's ``AsyncEngineArgs``, or None when vLLM cannot be
    imported here (then pass-through arguments are accepted unchecked; the worker's vLLM checks them).
    Importing vLLM takes seconds, so this is called only when there is something to check."""
    try:
        from vllm.engine.arg_utils import AsyncEngineArgs
    except Exception:  # not installed, or installed without a usable torch: nothing to check against
        return None
    return frozenset(f.name for f in dataclasses.fields(AsyncEngineArgs))


class VllmArgs(BaseModel):
    """Arguments of a vLLM engine: the ``AsyncEngineArgs`` fields pdserve models, plus ``extra_args``.

    A typed field left at None is not passed (vLLM's default applies). ``extra_args`` is the deliberate
    pass-through for any other ``AsyncEngineArgs`` field (``{name: JSON value}``); its names are checked
    against the installed vLLM when vLLM is importable, and may name neither a typed field nor one
    pdserve sets itself (``VLLM_ARGS_SET_BY_PDSERVE``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kind: Literal["vllm"] = "vllm"
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] | None = None
    enforce_eager: bool | None = None
    block_size: int | None = Field(default=None, gt=0)
    max_model_len: int | None = Field(default=None, gt=0)
    max_num_seqs: int | None = Field(default=None, gt=0)
    max_num_batched_tokens: int | None = Field(default=None, gt=0)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    tensor_parallel_size: int | None = Field(default=None, ge=1)
    enable_chunked_prefill: bool | None = None
    seed: int | None = None
    extra_args: dict[str, JsonValue] = Field(default_factory=dict)

    @classmethod
    def typed_names(cls) -> frozenset[str]:
        """The ``AsyncEngineArgs`` fields modelled here (every field but ``kind`` and ``extra_args``)."""
        return frozenset(cls.model_fields) - {"kind", "extra_args"}

    @field_validator("extra_args")
    @classmethod
    def _names_known_to_vllm(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        if not value:
            return value
        known = vllm_engine_arg_names()
        problems = []
        for name in value:
            if name in cls.typed_names():
                problems.append(((name,), f"{name!r} is a typed engine argument: set it next to extra_args"))
            elif name in VLLM_ARGS_SET_BY_PDSERVE:
                problems.append(((name,), f"{name!r} is set by pdserve itself"))
            elif known is not None and name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(((name,), f"{name!r} is not an engine argument of the installed vLLM "
                                          f"(vllm.engine.arg_utils.AsyncEngineArgs){hint}"))
        if problems:
            raise _problems(cls.__name__, problems)
        return value

    def engine_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AsyncEngineArgs``: the typed fields given, then ``extra_args``."""
        typed = self.model_dump(exclude_none=True, exclude={"kind", "extra_args"})
        return {**typed, **self.extra_args}

    def merged(self, override: VllmArgs) -> VllmArgs:
        """These arguments with ``override``'s given fields laid over them (``extra_args`` key by key)."""
        data = {**self.model_dump(exclude_unset=True), **override.model_dump(exclude_unset=True)}
        data["extra_args"] = {**self.extra_args, **override.extra_args}
        return VllmArgs.model_validate(data)


class SimArgs(SimProfileFields):
    """Arguments of a simulated engine: a ``profile`` reference plus overrides of its fields.

    ``profile`` names a profile file (``protocol.sim_profile.profile_path``); None means the built-in
    defaults. Every profile field given here overrides the file's value; a field not given keeps it.
    "Given" is pydantic's ``model_fields_set``, and it survives the JSON round trip because only given
    fields (and ``kind``) are serialised. Validation checks each given field and the named file; the
    combination (``eos_token_id < vocab_size``) is checked when ``resolve`` builds the profile.
    """

    kind: Literal["sim"] = "sim"
    profile: str | None = None

    @field_validator("profile")
    @classmethod
    def _profile_file_is_valid(cls, name: str | None) -> str | None:
        if name is not None:
            try:
                read_profile(name)
            except ProfileFileError as exc:
                raise _problems(cls.__name__, [((), f"{exc.path}: {p}") for p in exc.problems]) from None
        return name

    @model_serializer(mode="wrap")
    def _given_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if k == "kind" or k in self.model_fields_set}

    def overrides(self) -> dict[str, Any]:
        """The profile fields given here, by name."""
        return {name: getattr(self, name) for name in SimProfileFields.model_fields if name in self.model_fields_set}

    def resolve(self, launcher: Mapping[str, Any] | None = None) -> SimProfile:
        """The engine's profile. Precedence, lowest first: field defaults, the profile file, the
        launcher's values (``launcher``: profile fields the orchestrator decides, e.g. the lease from
        ``transfer.lease_timeout_s``), the fields given here. Raises ``ValidationError`` if the result
        is not a valid profile, ``ProfileFileError`` if the file went missing or bad since validation."""
        base = read_profile(self.profile) if self.profile is not None else {}
        return SimProfile.model_validate({**base, **(launcher or {}), **self.overrides()})

    def merged(self, override: SimArgs) -> SimArgs:
        """These arguments with ``override``'s given fields (``profile`` included) laid over them."""
        return SimArgs.model_validate({**self.model_dump(), **override.model_dump()})


EngineArgs = Annotated[VllmArgs | SimArgs, Field(discriminator="kind")]


def merge_args(base: VllmArgs | SimArgs, override: VllmArgs | SimArgs | None) -> VllmArgs | SimArgs:
    """``base`` with a pool's ``override`` laid over it; both must be of the same kind."""
    if override is None:
        return base
    if isinstance(base, VllmArgs) and isinstance(override, VllmArgs):
        return base.merged(override)
    if isinstance(base, SimArgs) and isinstance(override, SimArgs):
        return base.merged(override)
    raise ValueError(f"engine args of kind {override.kind!r} cannot override engine args of kind {base.kind!r}")
