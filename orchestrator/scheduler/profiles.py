"""Pool profiles: the YAML shape of a pipeline (pydantic v2, frozen, unknown keys rejected), the
built-in presets, and ``build_pipeline``.

```yaml
name: prefill
filters: [healthy]
scorers:
  - {name: kv_aware, weight: 1.0, params: {default_tokens_per_s: 8000}}
picker: max_score
```
A filter or picker may be written as a bare name. Plugin names and their ``params`` are checked against
``registry`` when the profile is parsed, so a typo fails at config load with its path.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .pipeline import Pipeline, WeightedScorer
from .plugin import PluginEnv
from .registry import FILTERS, PICKERS, SCORERS, Registry


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    registry: ClassVar[Registry[Any]]

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _known(self) -> _Spec:
        try:
            self.registry.parse_params(self.name, self.params)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        return self


class FilterSpec(_Spec):
    registry: ClassVar[Registry[Any]] = FILTERS


class PickerSpec(_Spec):
    registry: ClassVar[Registry[Any]] = PICKERS


class ScorerSpec(_Spec):
    registry: ClassVar[Registry[Any]] = SCORERS
    weight: float = Field(default=1.0, ge=0)


class PoolProfile(BaseModel):
    """One pool's routing policy: filters, then weighted scorers, then one picker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    filters: tuple[FilterSpec, ...] = (FilterSpec(name="healthy"),)
    scorers: tuple[ScorerSpec, ...] = ()
    picker: PickerSpec = PickerSpec(name="max_score")


def build_pipeline(profile: PoolProfile, env: PluginEnv | None = None) -> Pipeline:
    """Fresh plugin instances for ``profile`` (so picker state is per pipeline)."""
    env = env or PluginEnv()
    return Pipeline(
        profile.name,
        [FILTERS.create(f.name, f.params, env) for f in profile.filters],
        [WeightedScorer(SCORERS.create(s.name, s.params, env), s.weight) for s in profile.scorers],
        PICKERS.create(profile.picker.name, profile.picker.params, env),
    )


def _profile(name: str, scorers: dict[str, float], picker: str = "max_score",
             picker_params: dict[str, Any] | None = None, **more: Any) -> PoolProfile:
    specs = [ScorerSpec(name=n, weight=w) for n, w in scorers.items()]
    return PoolProfile(name=name, scorers=tuple(specs), picker=PickerSpec(name=picker, params=picker_params or {}),
                       **more)


PRESETS: dict[str, PoolProfile] = {
    "round_robin": _profile("round_robin", {}, picker="round_robin"),
    "random": _profile("random", {}, picker="random"),
    "least_loaded": _profile("least_loaded", {"least_loaded": 1.0}),
    "kv_usage": _profile("kv_usage", {"kv_usage": 1.0}),
    "prefix": _profile("prefix", {"prefix": 1.0}),
    "session": _profile("session", {"session": 1.0, "least_loaded": 0.1}),
    "kv_aware": _profile("kv_aware", {"kv_aware": 1.0}),
    "kv_aware_softmax": _profile("kv_aware_softmax", {"kv_aware": 1.0}, picker="softmax",
                                 picker_params={"temperature": 0.02}),
    # Remote placements: load, free KV and the link. Local prefills (transfer_cost abstains): load, free KV
    # and, leading, the time to prefill on the worker's own cache (local_prefill abstains on remote ones).
    "decode": _profile("decode", {"least_loaded": 1.0, "kv_usage": 0.5, "transfer_cost": 0.5,
                                  "local_prefill": 2.0},
                       filters=(FilterSpec(name="healthy"), FilterSpec(name="kv_headroom"))),
}


def preset(name: str) -> PoolProfile:
    """A built-in profile by name. Raises ``KeyError`` naming the presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None
