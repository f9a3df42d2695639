"""Shared builders for the scheduler's table tests (a plain module, not a conftest, so its name is unique)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchestrator.scheduler.decision import Decision
from orchestrator.scheduler.plugin import PluginEnv
from orchestrator.scheduler.profiles import PoolProfile, build_pipeline
from orchestrator.scheduler.request import RouteRequest, WorkerState


def request(blocks: int = 4, block_size: int = 16, **kw: object) -> RouteRequest:
    return RouteRequest(tuple(range(100, 100 + blocks)), blocks * block_size, block_size, **kw)  # type: ignore[arg-type]


def route(profile: dict[str, object] | PoolProfile, workers: Sequence[WorkerState],
          match: Mapping[str, int] | None = None, req: RouteRequest | None = None,
          env: PluginEnv | None = None) -> Decision:
    prof = profile if isinstance(profile, PoolProfile) else PoolProfile.model_validate(profile)
    return build_pipeline(prof, env).route(req or request(), workers, match or {})


THREE = (WorkerState("a"), WorkerState("b"), WorkerState("c"))
