"""The engine adapter contract: one protocol, two implementations (``vllm`` and ``sim``).

An adapter owns one inference engine. It takes token ids in and yields token deltas out; it never
sees text. Both roles use the same adapter: a prefill request carries ``remote_decode=True`` and the
final delta then carries the ``KVHandoff``; a decode request carries the handoff to pull.
Adapters are registered by name in ``ENGINES`` and built from an ``EngineSpec``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from protocol.launch import EngineSpec
from protocol.types import EngineInfo, EngineLoad, KvEventBatch, KVHandoff, SamplingSpec, TokenChunk


@dataclass(frozen=True)
class EngineRequest:
    """One request for an engine.

    ``remote_decode``: run as a prefill for another worker (max_tokens is forced to 1 by the prefill
    role) and keep the KV blocks under a lease. ``handoff``: pull the prompt's KV from this prefill
    worker before decoding. ``cache_salt`` isolates tenants in the prefix cache. ``lora``: the name of
    one of the engine's LoRA adapters (``EngineSpec.adapters``) to run with; None: the base model.
    ``answer_prefix``: the prompt's last tokens that are the answer's own, already sent
    (``GenerateCall.answer_prefix``); a real model just reads them as context.
    """

    request_id: str
    prompt_token_ids: tuple[int, ...]
    sampling: SamplingSpec
    remote_decode: bool = False
    handoff: KVHandoff | None = None
    cache_salt: str | None = None
    lora: str | None = None
    answer_prefix: int = 0


@dataclass(frozen=True)
class TokenDelta(TokenChunk):
    """A ``TokenChunk`` (new tokens since the previous delta of the same request, same field contract)
    plus what only the worker sees: ``handoff``, set on the last delta of a ``remote_decode`` request.
    A delta is a chunk, so the decode role streams the engine's deltas as they are; only the chunk's
    fields cross the wire.
    """

    handoff: KVHandoff | None = None


class HandoffVoid(RuntimeError):
    """A decode request's handoff cannot be used: the prefill side no longer holds its blocks (the lease
    ran out, the prefill worker is gone) or the engine failed to load them. ``generate`` raises it before
    yielding any token, so the request produced nothing and may be prefilled again; the worker answers
    gRPC ABORTED with ``reason`` (one of ``VOID_REASONS``) in the trailing metadata."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in VOID_REASONS:
            raise ValueError(f"unknown handoff-void reason {reason!r}")
        self.reason = reason
        super().__init__(message)


VOID_REASONS = ("lease_expired", "source_gone", "load_failed")


class EngineAdapter(Protocol):
    """Contract for an engine. One instance per worker; the worker runtime owns it.

    ``start`` must be awaited once before anything else; ``shutdown`` releases every resource and may
    be called more than once. ``generate`` is an async generator: closing it early (the client went
    away) must abort the request in the engine. ``abort`` of a finished prefill frees the blocks it holds
    for a remote decode where the engine can (sim; vLLM's connector frees them only when pulled or at
    lease expiry); of an unknown or finished id it is otherwise a no-op.
    ``generate`` of a request with a handoff raises ``HandoffVoid`` when the handoff's KV cannot be read.
    ``kv_events`` yields batches as the engine publishes them, forever, until shutdown; it may be
    consumed by one reader at a time.
    """

    async def start(self) -> None: ...

    def info(self) -> EngineInfo: ...

    def generate(self, request: EngineRequest) -> AsyncIterator[TokenDelta]: ...

    async def abort(self, request_id: str) -> None: ...

    def load(self) -> EngineLoad: ...

    def kv_events(self) -> AsyncIterator[KvEventBatch]: ...

    async def shutdown(self) -> None: ...


EngineFactory = Callable[[EngineSpec], EngineAdapter]
ENGINES: dict[str, EngineFactory] = {}


def register_engine(name: str) -> Callable[[EngineFactory], EngineFactory]:
    """Class decorator: make an adapter buildable by ``build_engine`` under ``name``."""

    def wrap(factory: EngineFactory) -> EngineFactory:
        if name in ENGINES:
            raise ValueError(f"engine {name!r} registered twice")
        ENGINES[name] = factory
        return factory

    return wrap


def build_engine(spec: EngineSpec) -> EngineAdapter:
    """Build the adapter named by ``spec.kind``; raises ``KeyError`` naming the known kinds."""
    import importlib

    if spec.kind not in ENGINES:
        importlib.import_module(f"worker.engines.{spec.kind}")
    try:
        return ENGINES[spec.kind](spec)
    except KeyError:
        raise KeyError(f"unknown engine {spec.kind!r}; known: {sorted(ENGINES)}") from None
