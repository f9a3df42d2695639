"""The frozen records a routing decision reads: the request and each worker's state."""

from __future__ import annotations

from dataclasses import dataclass

from .links import LinkTable


@dataclass(frozen=True)
class RouteRequest:
    """One prompt to place. ``block_hashes`` are pdserve hashes of its full blocks (``hashing``), as Python
    ints; ``session_key`` is the ``X-Session-Id`` header or the request's ``user`` field, or None.
    For decode placement, ``source_host`` is the prefill worker's host and ``kv_bytes_per_token`` the
    model's KV footprint, so the prompt's KV is ``prompt_tokens * kv_bytes_per_token`` bytes; a decode
    placement without ``source_host`` is a local prefill (the decode worker computes the prompt).
    ``links`` is the link table as measured when the request is placed (a frozen snapshot); None leaves
    the plugins' configured table (``PluginEnv.links``)."""

    block_hashes: tuple[int, ...]
    prompt_tokens: int
    block_size: int
    session_key: str | None = None
    request_id: str = ""
    source_host: str | None = None
    kv_bytes_per_token: int = 0
    links: LinkTable | None = None

    @property
    def num_blocks(self) -> int:
        return len(self.block_hashes)

    def uncached_tokens(self, matched_blocks: int) -> int:
        """Prompt tokens a worker holding ``matched_blocks`` leading blocks still has to prefill."""
        return max(0, self.prompt_tokens - matched_blocks * self.block_size)


@dataclass(frozen=True)
class WorkerState:
    """What the router knows of one worker at decision time.

    ``running``/``waiting``/``kv_usage`` come from the engine's load report; ``queued_prefill_tokens``
    is prompt work sent to it and not finished (the orchestrator's own count, so it includes requests
    dispatched since the last report). ``queue_bound`` caps ``waiting``: a worker at or past it is
    saturated (None: unbounded). ``prefill_tokens_per_s`` is its prefill speed (0: unknown, the scorer's
    default applies)."""

    worker_id: str
    host: str = "localhost"
    healthy: bool = True
    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0
    queued_prefill_tokens: int = 0
    queue_bound: int | None = None
    prefill_tokens_per_s: float = 0.0

    @property
    def load(self) -> int:
        return self.running + self.waiting

    @property
    def has_room(self) -> bool:
        return self.queue_bound is None or self.waiting < self.queue_bound
