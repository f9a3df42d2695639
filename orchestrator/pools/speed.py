"""A prefill worker's measured prefill speed, from its Prefill RPCs as the orchestrator sees them.

The speed is prompt work over busy time: each RPC that ends adds its uncached prompt tokens (what its
worker had to compute) and the time since the later of its own start and the previous RPC's end on that
worker. On an idle worker that is the RPC's own tokens over its own duration; under load, when RPCs queue
on the worker, it counts each stretch of busy time once (a FIFO worker finishing RPCs back to back yields
each one's tokens over its own compute time, not over its wait as well), so the estimate does not drop
with the queue the ``kv_aware`` scorer already counts. The figure is the ratio of exponentially weighted
means of tokens and seconds (weights ``max(alpha, 1/n)``, so the first RPC sets it outright).
Not thread-safe: the orchestrator's event loop owns it. Times are any one monotonic clock.
"""

from __future__ import annotations

DEFAULT_ALPHA = 0.2


class PrefillSpeed:
    """Prefill tokens per second of one worker; ``tokens_per_s`` is 0 until an RPC has ended."""

    __slots__ = ("_alpha", "_mark", "_samples", "_seconds", "_tokens")

    def __init__(self, alpha: float = DEFAULT_ALPHA) -> None:
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        self._alpha = alpha
        self._mark = 0.0  # start of the busy stretch the next ending RPC is charged for
        self._samples = 0
        self._tokens = self._seconds = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self._tokens / self._seconds if self._samples and self._seconds > 0 else 0.0

    @property
    def samples(self) -> int:
        return self._samples

    def started(self, now: float, idle: bool) -> None:
        """A Prefill RPC was sent at ``now``; ``idle``: no other RPC was in flight on the worker."""
        if idle:
            self._mark = now

    def ended(self, now: float, tokens: int) -> None:
        """A Prefill RPC ended at ``now`` after computing ``tokens`` uncached prompt tokens."""
        seconds = now - self._mark
        self._mark = now
        if seconds <= 0 and tokens <= 0:
            return
        self._samples += 1
        a = max(self._alpha, 1.0 / self._samples)
        self._tokens += a * (max(0, tokens) - self._tokens)
        self._seconds += a * (max(0.0, seconds) - self._seconds)

    def failed(self, now: float) -> None:
        """A Prefill RPC ended at ``now`` without a result: its time says nothing of the speed."""
        self._mark = now
