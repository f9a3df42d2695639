"""Fixtures shared by the unit and integration suites (kept light: heavy imports happen lazily)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny random Llama with SmolLM2's tokenizer, built once into ~/.cache/pdserve (seconds)."""
    from orchestrator.model_prep import prepare_tiny

    return prepare_tiny()
