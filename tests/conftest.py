"""Fixtures shared by the unit and integration suites (kept light: heavy imports happen lazily)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Property tests judge the code, not the host: on a busy 2-core machine generating examples can be
# slow, which must not fail a run (no deadlines, no "too slow" health check).
settings.register_profile("pdserve", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("pdserve")


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny random Llama with SmolLM2's tokenizer, built once into ~/.cache/pdserve (seconds)."""
    from orchestrator.model_prep import prepare_tiny

    return prepare_tiny()
