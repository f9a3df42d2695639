"""The models one front end serves: a config file of one model, or of several under ``models:``.

A config of several models puts each model's own sections in an entry of ``models:`` (``model``,
``engine``, ``prefill``, ``decode``, ``colocated``, ``disaggregation``, ``index``); everything else
(``transfer``, ``server``, ``auth``, ``limits``, ``cpu``, ``network``, ``ray``) sits at the top level and
is shared. Each entry is validated as a whole ``PdserveConfig`` (the shared sections laid under it), so
every single-model rule holds per model and errors name their path (``models.1.prefill.replicas``).

In a deployment of several models every model gets a ``model.key`` (its short name in worker and process
ids, ``tiny.prefill-0``; the name made lower-case and id-safe unless the entry sets one), and, when vLLM
workers on CPU hosts bind cores, one split of the host over every model's configured workers
(``cpu.host_slots`` / ``cpu.slot_offset``), so two models' engines never compute on the same cores while
there are cores enough. A single-model file is read exactly as before (no key, ids ``prefill-0``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.config import ConfigError, PdserveConfig, validate_config, with_overrides

PER_MODEL = ("model", "engine", "prefill", "decode", "colocated", "disaggregation", "index")


@dataclass(frozen=True)
class Deployment:
    """The served models, in config order, each a complete ``PdserveConfig`` (names and keys unique;
    their shared sections equal). ``shared`` is the first: read the shared sections from it."""

    models: tuple[PdserveConfig, ...]

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("a deployment serves at least one model")

    @property
    def shared(self) -> PdserveConfig:
        return self.models[0]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.model.name for m in self.models)

    def __iter__(self) -> Iterator[PdserveConfig]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    def owner_of(self, worker_id: str) -> PdserveConfig:
        """The model whose worker ``worker_id`` is (by its id's prefix); ``KeyError`` if none."""
        if len(self.models) == 1:
            return self.models[0]
        for config in self.models:
            if worker_id.startswith(config.worker_prefix):
                return config
        raise KeyError(worker_id)


def key_of(name: str) -> str:
    """``name`` as an id-safe key: lower case, runs of anything but ``[a-z0-9_-]`` made ``-``, the part
    after the last ``/`` (``HuggingFaceTB/SmolLM2-135M`` -> ``smollm2-135m``), at most 40 characters."""
    tail = name.rsplit("/", 1)[-1].lower()
    key = re.sub(r"[^a-z0-9_-]+", "-", tail).strip("-_")[:40]
    return key or "model"


def _cpu_slots(configs: list[PdserveConfig]) -> list[PdserveConfig]:
    """The configs with one host split over every model whose vLLM workers bind CPU cores."""
    binding = [c.engine.kind == "vllm" and c.transfer.device == "cpu" and c.cpu.bind == "auto" for c in configs]
    slots = sum(_configured_workers(c) for c, binds in zip(configs, binding, strict=True) if binds)
    out, offset = [], 0
    for config, binds in zip(configs, binding, strict=True):
        if binds and sum(binding) > 1:
            cpu = config.cpu.model_copy(update={"host_slots": max(1, slots), "slot_offset": offset})
            offset += _configured_workers(config)
            config = config.model_copy(update={"cpu": cpu})
        out.append(config)
    return out


def _configured_workers(config: PdserveConfig) -> int:
    return config.decode.replicas + (0 if config.colocated else config.prefill.replicas)


def parse_deployment(raw: Any, source: str = "<config>", overrides: dict[str, Any] | None = None) -> Deployment:
    """The deployment of a loaded YAML tree (plus dotted overrides, ``models.0.prefill.replicas=2``);
    ``ConfigError`` lists every problem of every model."""
    tree = with_overrides(raw, source, overrides)
    if "models" not in tree:
        return Deployment((validate_config(tree, source),))
    entries = tree.pop("models")
    problems = [f"{key}: set per model in each entry of models:" for key in PER_MODEL if key in tree]
    if not isinstance(entries, list) or not entries:
        raise ConfigError(source, [*problems, "models: expected a non-empty list of models"])
    configs: list[PdserveConfig] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.append(f"models.{i}: expected a mapping")
            continue
        problems += [f"models.{i}.{key}: shared by every model, set it at the top level"
                     for key in entry if key not in PER_MODEL]
        try:
            config = validate_config({**tree, **{k: v for k, v in entry.items() if k in PER_MODEL}}, source,
                                     at=f"models.{i}.")
        except ConfigError as exc:
            problems += exc.problems
            continue
        key = config.model.key or key_of(config.model.name)
        configs.append(config.model_copy(update={"model": config.model.model_copy(update={"key": key})}))
    names = [name for c in configs for name in (c.model.name, *(a.name for a in c.model.adapters))]
    for field, values in (("name", names), ("key", [c.worker_prefix for c in configs])):
        problems += [f"models: two models{' (or LoRA adapters)' if field == 'name' else ''} have the {field} "
                     f"{v.rstrip('.')!r}"
                     for v in sorted({v for v in values if values.count(v) > 1})]
    if problems:
        raise ConfigError(source, problems)
    return Deployment(tuple(_cpu_slots(configs)))


def load_deployment(path: str | Path, overrides: dict[str, Any] | None = None) -> Deployment:
    """Read and validate a YAML config file of one model or several."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"<yaml>: {exc}"]) from None
    return parse_deployment(raw, str(path), overrides)
