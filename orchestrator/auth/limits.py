"""Admission limits: a token bucket per key (requests per minute), requests in flight per key, and
requests in flight in the whole deployment. Pure: no I/O, the clock is passed in.

``Limits.admit`` either returns a ``Ticket`` (release it when the response is done; releasing twice is
harmless) or raises ``Refused`` with the reason and how long to wait before retrying. The checks with no
side effects run first, so a refused request never spends a token of its bucket.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

RefusalReason = Literal["key_concurrency", "key_rate", "server_busy"]
BUSY_RETRY_AFTER_S = 1  # no way to know when an in-flight request ends; a short, honest hint


class Refused(Exception):
    """A request not admitted: ``reason`` and ``retry_after_s`` (whole seconds, >= 1)."""

    def __init__(self, reason: RefusalReason, retry_after_s: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.message = message


@dataclass
class TokenBucket:
    """``capacity`` tokens, refilled at ``rate_per_s``; starts full."""

    rate_per_s: float
    capacity: float
    tokens: float = field(init=False)
    updated: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.capacity < 1:
            raise ValueError("a token bucket needs rate_per_s > 0 and capacity >= 1")
        self.tokens = self.capacity

    @classmethod
    def per_minute(cls, requests_per_minute: float) -> TokenBucket:
        """A bucket allowing ``requests_per_minute`` on average, in bursts of up to that many."""
        return cls(requests_per_minute / 60.0, max(1.0, requests_per_minute))

    def take(self, now: float) -> float:
        """Take one token and return 0, or take nothing and return the seconds until one is available."""
        if self.updated is not None:  # refill since the last call
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens < 1:
            return (1 - self.tokens) / self.rate_per_s
        self.tokens -= 1
        return 0.0


@dataclass
class Ticket:
    """An admitted request's hold on its limits; ``release`` once done (idempotent)."""

    _release: Callable[[], None] | None

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


@dataclass
class _KeyState:
    in_flight: int = 0
    bucket: TokenBucket | None = None


class Limits:
    """In-flight counts and buckets of every key seen, and the deployment's in-flight bound
    (``max_in_flight``; None: unbounded)."""

    def __init__(self, max_in_flight: int | None, clock: Callable[[], float]) -> None:
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._clock = clock
        self._keys: dict[str, _KeyState] = {}

    def key_in_flight(self, key: str) -> int:
        state = self._keys.get(key)
        return state.in_flight if state else 0

    def admit(self, key: str | None = None, max_concurrency: int | None = None,
              requests_per_minute: float | None = None) -> Ticket:
        """Admit one request of ``key`` (an opaque id; None: no key, only the deployment bound applies)."""
        state = self._keys.setdefault(key, _KeyState()) if key is not None else None
        if state is not None and max_concurrency is not None and state.in_flight >= max_concurrency:
            raise Refused("key_concurrency", BUSY_RETRY_AFTER_S,
                          f"Too many concurrent requests for this API key (limit {max_concurrency}).")
        if self.max_in_flight is not None and self.in_flight >= self.max_in_flight:
            raise Refused("server_busy", BUSY_RETRY_AFTER_S,
                          "The server is at its limit of requests in flight; retry shortly.")
        if state is not None and requests_per_minute is not None:
            if state.bucket is None or state.bucket.rate_per_s != requests_per_minute / 60.0:
                state.bucket = TokenBucket.per_minute(requests_per_minute)
            wait = state.bucket.take(self._clock())
            if wait > 0:
                raise Refused("key_rate", max(1, math.ceil(wait)),
                              f"Rate limit reached for this API key ({requests_per_minute:g} requests per minute).")
        self.in_flight += 1
        if state is not None:
            state.in_flight += 1

        def release() -> None:
            self.in_flight -= 1
            if state is not None:
                state.in_flight -= 1

        return Ticket(release)
