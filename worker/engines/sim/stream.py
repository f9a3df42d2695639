"""``RequestStream``: what one request of the sim engine has produced and its ``generate`` consumer has not
taken yet. Owned by the engine, mutated on its event loop only."""

from __future__ import annotations

import asyncio

from protocol.types import KVHandoff, KvPull
from worker.engine import EngineRequest, TokenDelta


class RequestStream:
    """Tokens produced for one request and not yet taken by its ``generate`` consumer."""

    __slots__ = ("cached", "error", "finish", "handoff", "pull", "ready", "request", "tokens")

    def __init__(self, request: EngineRequest) -> None:
        self.request = request
        self.tokens: list[int] = []
        self.finish: str | None = None
        self.cached = 0
        self.handoff: KVHandoff | None = None
        self.error: BaseException | None = None
        self.pull: KvPull | None = None  # the finished pull's figures, for the next delta only
        self.ready = asyncio.Event()

    def push(self, tokens: tuple[int, ...], finish: str | None, cached: int,
             handoff: KVHandoff | None = None) -> None:
        self.tokens.extend(tokens)
        self.finish, self.cached, self.handoff = finish, cached, handoff
        self.ready.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.ready.set()

    async def take(self) -> TokenDelta:
        while not (self.tokens or self.finish or self.error):
            self.ready.clear()
            await self.ready.wait()
        if self.error is not None:
            raise self.error
        delta = TokenDelta(tuple(self.tokens), finished=self.finish is not None, finish_reason=self.finish,
                           num_cached_tokens=self.cached, kv_pull=self.pull, handoff=self.handoff)
        self.tokens, self.pull = [], None
        return delta
