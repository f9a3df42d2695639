"""LoRA adapters of a vLLM worker: the engine arguments that enable them and the per-request lookup.

A worker serves the adapters its launch spec lists (``EngineSpec.adapters``, from ``model.adapters`` in
the config); a call names one by its name (``PrefillCall.lora`` / ``GenerateCall.lora``). The prefill
and the decode worker of a request run the same adapter, so the KV the decode worker pulls is the KV its
own adapter would have computed. vLLM hashes an adapter's blocks apart from the base model's and names the
adapter in its KV events (``lora_name``), which pdserve's index salts with (``orchestrator.scheduler``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from protocol.launch import AdapterSpec

# The ranks vLLM accepts for ``max_lora_rank`` (vllm.config.lora.MaxLoRARanks in 0.32).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def adapter_rank(path: str) -> int:
    """The rank ``r`` in an adapter folder's ``adapter_config.json``; ``ValueError`` when unreadable."""
    try:
        return int(json.loads((Path(path) / "adapter_config.json").read_text())["r"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"LoRA adapter at {path}: no readable adapter_config.json with a rank r ({exc})") from None


def lora_engine_kwargs(adapters: Sequence[AdapterSpec]) -> dict[str, Any]:
    """``AsyncEngineArgs`` keywords serving ``adapters``: LoRA on, every adapter in one batch, the
    smallest rank vLLM accepts that fits the largest adapter. Nothing for no adapter. Reads each
    adapter's config from disk; ``ValueError`` for a rank vLLM cannot serve."""
    if not adapters:
        return {}
    rank = max(adapter_rank(a.path) for a in adapters)
    fitting = [r for r in VLLM_LORA_RANKS if r >= rank]
    if not fitting:
        raise ValueError(f"LoRA rank {rank} is above vLLM's largest, {VLLM_LORA_RANKS[-1]}")
    return {"enable_lora": True, "max_loras": len(adapters), "max_lora_rank": fitting[0]}


class LoraRequests:
    """The ``LoRARequest`` of each adapter, by name (built once; vLLM loads an adapter on first use)."""

    def __init__(self, adapters: Sequence[AdapterSpec]) -> None:
        self._by_name = {a.name: a for a in adapters}
        self._built: dict[str, Any] = {}

    def get(self, name: str | None) -> Any:
        """None for the base model; ``ValueError`` (the call is refused) for an adapter not served here."""
        if name is None:
            return None
        if name not in self._by_name:
            served = ", ".join(sorted(self._by_name)) or "none"
            raise ValueError(f"LoRA adapter {name!r} is not served by this worker (served: {served})")
        if name not in self._built:
            from vllm.lora.request import LoRARequest

            spec = self._by_name[name]
            self._built[name] = LoRARequest(spec.name, spec.adapter_id, spec.path)
        return self._built[name]
