"""The simulated engine's profile, as the worker builds it from its ``EngineSpec``.

The profile's schema (``SimProfile``) and its YAML files live in ``protocol.sim_profile``, shared with
the orchestrator, which validates them when its config loads. Here the worker resolves its typed
``SimArgs`` (a profile name plus overrides) together with what the launcher decided for this worker.
"""

from __future__ import annotations

from typing import Any

from protocol.engine_args import SimArgs
from protocol.launch import EngineSpec
from protocol.sim_profile import SimProfile

__all__ = ["SimProfile", "profile_for"]


def profile_for(spec: EngineSpec) -> SimProfile:
    """The profile of ``spec``'s engine. Precedence, lowest first: field defaults, the profile file, the
    spec's ``lease_timeout_s``/``handoff_host`` (when set), the fields ``spec.args`` gives. Raises
    ``TypeError`` for non-sim args, ``ValueError`` for an invalid profile."""
    if not isinstance(spec.args, SimArgs):
        raise TypeError(f"the sim engine needs sim engine args, got kind {spec.args.kind!r}")
    launcher: dict[str, Any] = {"lease_timeout_s": spec.lease_timeout_s, "handoff_host": spec.handoff_host}
    return spec.args.resolve({name: value for name, value in launcher.items() if value is not None})
