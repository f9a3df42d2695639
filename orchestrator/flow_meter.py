"""What the request flow measures, and where each figure goes (``orchestrator.flow`` calls it).

* Prefill RPCs: their latency (``pdserve_prefill_seconds``) and each prefill worker's speed
  (``WorkerHandle.prefill_speed``, read by ``kv_aware`` through ``worker_state``).
* A request's answer stream (``StreamMeter``, over its Generate calls and a lead token, see
  ``orchestrator.lead_token``): TTFT, ITL, TPOT, E2E and token counts; for a request with a KV handoff,
  the handoff's figures and one sample of its link, (prefill host, decode host), for the measured link
  table (``MeasuredLinks``) and its gauges. The sample is the decode worker's own report of the pull
  (``TokenChunk.kv_pull``) when it sends one; else the time from the Generate call to the decode worker's
  first token, which also holds the decode engine's first step and the RPC: an upper bound of the pull, so
  the bandwidth fitted from it is a lower bound (counted as ``measure="upper_bound"``).

Everything here runs on the orchestrator's event loop; the meter keeps no state of its own beyond the
objects it is given. Times are ``time.perf_counter`` seconds passed in by the caller.
"""

from __future__ import annotations

from orchestrator.metrics import Metrics
from orchestrator.placement import Placement
from orchestrator.pools.pool import WorkerHandle
from orchestrator.scheduler.link_meter import MeasuredLinks
from protocol.types import KVHandoff, TokenChunk


class FlowMeter:
    """Records the flow's figures into ``metrics``, the link table ``links`` and the workers' speeds."""

    def __init__(self, metrics: Metrics, links: MeasuredLinks, kv_bytes_per_token: int) -> None:
        self.metrics = metrics
        self.links = links
        self.kv_bytes_per_token = kv_bytes_per_token

    # ----------------------------------------------------------------- prefill
    def prefill_started(self, handle: WorkerHandle, now: float) -> None:
        """Call before counting the RPC in ``handle.in_flight``."""
        handle.prefill_speed.started(now, idle=handle.in_flight == 0)

    def prefill_ended(self, handle: WorkerHandle, started: float, now: float, uncached_tokens: int) -> None:
        self.metrics.prefill.observe(now - started)
        handle.prefill_speed.ended(now, uncached_tokens)

    def prefill_failed(self, handle: WorkerHandle, now: float) -> None:
        handle.prefill_speed.failed(now)

    # ----------------------------------------------------------------- decode
    def handoff(self, handoff: KVHandoff, seconds: float) -> None:
        self.metrics.handoff_latency.observe(seconds)
        self.metrics.handoff_blocks.inc(handoff.num_blocks)
        self.metrics.handoff_bytes.observe(handoff.prompt_tokens * self.kv_bytes_per_token)

    def link_sample(self, src: str, dst: str, nbytes: int, seconds: float, measure: str) -> None:
        """One pull from ``src`` to ``dst`` into the table; the pair's gauges follow its estimate."""
        if nbytes <= 0 or seconds <= 0:
            return
        estimate = self.links.observe(src, dst, nbytes, seconds)
        self.metrics.link_pulls.labels(src, dst, measure).inc()
        self.metrics.link_bandwidth.labels(src, dst).set(estimate.bandwidth_bytes_per_s)
        self.metrics.link_latency.labels(src, dst).set(estimate.latency_s)


class StreamMeter:
    """One request's answer figures. ``sent`` before each Generate call, ``lead`` for a lead token,
    ``chunk`` for every chunk a decode worker sends, ``close`` once at the end."""

    def __init__(self, meter: FlowMeter, placement: Placement) -> None:
        self._meter = meter
        self._placement = placement
        self._decode_host = ""
        self._source_host: str | None = None
        self._sent_at = placement.started
        self._last_at = placement.started
        self._pull_seen = False
        self.first_at: float | None = None
        self.decode_started = False  # a decode worker has sent a token
        self.out_tokens = 0

    def sent(self, placement: Placement, decode_host: str, source_host: str | None, now: float) -> None:
        """A Generate call for ``placement`` went to ``decode_host`` at ``now``. ``source_host``: the host of
        the prefill worker holding its handoff (None without one)."""
        self._placement = placement
        self._decode_host = decode_host
        self._source_host = source_host
        self._sent_at = now

    def lead(self, chunk: TokenChunk, now: float) -> None:
        """The prefill's first token went to the client at ``now``, before any Generate call: it is the
        answer's first token; the handoff is timed to the decode worker's own first token."""
        self._first(now, "prefill")
        self.out_tokens += len(chunk.token_ids)

    def chunk(self, chunk: TokenChunk, now: float) -> bool:
        """Account ``chunk`` received at ``now``; True when it carries the answer's first token."""
        handoff = self._placement.handoff
        if chunk.kv_pull is not None and handoff is not None and not self._pull_seen:
            self._pull_seen = True
            self._link(chunk.kv_pull.bytes, chunk.kv_pull.seconds, "worker")
        if not chunk.token_ids:
            return False
        if not self.decode_started:
            self.decode_started = True
            if handoff is not None:
                self._meter.handoff(handoff, now - self._sent_at)
                if not self._pull_seen:
                    nbytes = handoff.prompt_tokens * self._meter.kv_bytes_per_token
                    self._link(nbytes, now - self._sent_at, "upper_bound")
        first = self.first_at is None
        if first:
            self._first(now, "decode")
        else:
            self._meter.metrics.itl.observe(now - self._last_at)
            self._last_at = now
        self.out_tokens += len(chunk.token_ids)
        return first

    def _first(self, now: float, source: str) -> None:
        self.first_at = self._last_at = now
        self._meter.metrics.ttft.observe(now - self._placement.started)
        self._meter.metrics.first_tokens.labels(source).inc()

    def close(self, now: float, prompt_tokens: int) -> None:
        m = self._meter.metrics
        if self.first_at is not None:
            m.e2e.observe(now - self._placement.started)
            if self.out_tokens > 1:
                m.tpot.observe((now - self.first_at) / (self.out_tokens - 1))
        m.tokens.labels("generated").inc(self.out_tokens)
        m.tokens.labels("prompt").inc(prompt_tokens)

    def _link(self, nbytes: int, seconds: float, measure: str) -> None:
        if self._source_host is not None:
            self._meter.link_sample(self._source_host, self._decode_host, nbytes, seconds, measure)
