"""``SimEngine``: the ``EngineAdapter`` over ``SimEngineCore``, registered as engine kind ``sim``.

One asyncio task runs the engine loop: plan a step, sleep its modelled duration, apply it, deliver the
sampled tokens, publish the step's KV events as one ``KvEventBatch``. With nothing to do the task
waits on an event, and leases and KV pulls are loop timers, so an idle engine costs no CPU.

KV handoff. A ``remote_decode`` request finishes after its first token with a ``KVHandoff`` (engine id =
worker id, the prompt's block ids, the engine's side channel, lease deadline = now + ``lease_timeout_s``) and
its blocks stay held until ``release_handoff`` (or ``abort``), the lease expiring, or a decode engine in the
same process finishing its pull, or one in another process reporting its read on the side channel (the NIXL
completion notification; engines register by engine id while started, so ids must be unique in a process).
A request with a ``handoff`` allocates blocks for its prompt,
pulls those not in its own prefix cache through its host's NIC (``worker.engines.sim.nic``: the engines of
a process naming one ``handoff_host`` share it, and pulls through it queue behind each other; each takes
``link_latency_s + bytes / link_bandwidth_bytes_per_s``, scaled by ``speedup``, slower between racks of the
spec's ``sim_topology``), then recomputes the last prompt token and decodes, so its stream starts with the
same first token the prefill sampled. That first delta reports the pull (``KvPull``): its bytes and the
modelled seconds from the pull's start to its end, the wait for the NIC included. A pull fails
with ``KvPullError`` if the source no longer holds the blocks when it ends: an engine of this process is
asked; for another process's engine the lease deadline is checked and its side channel must still accept a
connection and still hold the blocks (as NIXL's handshake with a dead peer fails). The side channel is a TCP
listener each engine opens at start on ``handoff_host`` (port ``handoff_port``, 0: any free port); it carries
the read notifications (``worker.engines.sim.side_channel``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator

from protocol.types import EngineInfo, EngineLoad, KvEventBatch, KVHandoff, KvPull
from worker.engine import EngineRequest, EngineSpec, HandoffVoid, TokenDelta, register_engine
from worker.engines.sim.engine import Output, SimEngineCore
from worker.engines.sim.nic import LinkModel, nic_for
from worker.engines.sim.profile import profile_for
from worker.engines.sim.scheduler import Pull
from worker.engines.sim.side_channel import notify_read, open_side_channel
from worker.engines.sim.stream import RequestStream
from worker.engines.sim.timing import kv_bytes

MAX_PENDING_EVENT_BATCHES = 4096  # beyond this the oldest are dropped; the reader sees a seq gap
_MAX_CLOCK_LAG_S = 0.05  # how far behind its modelled clock the loop may run and still catch up

# Started sim engines of this process by engine id: a decode that pulled a handoff tells its
# prefill engine to free the blocks, as NIXL's completion notification does.
_PEERS: weakref.WeakValueDictionary[str, SimEngine] = weakref.WeakValueDictionary()


class KvPullError(HandoffVoid):
    """A decode could not pull a handoff's KV: the prefill side no longer holds the blocks."""


@register_engine("sim")
class SimEngine:
    """A simulated vLLM engine (see the module docstring), built from ``SimArgs`` (``profile_for``)."""

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        self.profile = profile_for(spec)
        self.core = SimEngineCore(self.profile)
        self.engine_id = spec.worker_id
        self._streams: dict[str, RequestStream] = {}
        self._leases: dict[str, asyncio.TimerHandle] = {}
        self._pulls: dict[str, asyncio.TimerHandle] = {}
        self._checks: set[asyncio.Task[None]] = set()  # pulls whose source is being checked
        self._events: deque[KvEventBatch] = deque(maxlen=MAX_PENDING_EVENT_BATCHES)
        self._events_ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._nic = nic_for(self.profile.handoff_host)
        self._link = LinkModel(self.profile, self.profile.handoff_host, spec.sim_topology)
        self._side_channel: asyncio.Server | None = None
        self._side_channel_port = self.profile.handoff_port
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.expired_leases = 0  # handoffs freed at lease expiry, never read
        self.steps = 0  # engine steps that computed something, for measurements
        # steps that started over _MAX_CLOCK_LAG_S behind the modelled clock: the process is short of
        # CPU and the simulation runs slower than its profile says
        self.late_steps = 0

    # ----------------------------------------------------------------- EngineAdapter
    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("engine already started")
        self._side_channel = await open_side_channel(self.profile.handoff_host, self.profile.handoff_port,
                                                     self.release_handoff)
        self._side_channel_port = self._side_channel.sockets[0].getsockname()[1]
        self._task = asyncio.create_task(self._run(), name=f"sim-engine-{self.engine_id}")
        _PEERS[self.engine_id] = self

    def info(self) -> EngineInfo:
        p = self.profile
        return EngineInfo(engine_id=self.engine_id, model=self.spec.model or p.model, block_size=p.block_size,
                          num_blocks=p.num_blocks, max_model_len=self.core.max_model_len,
                          kv_bytes_per_token=p.kv_bytes_per_token)

    async def generate(self, request: EngineRequest) -> AsyncIterator[TokenDelta]:
        if self._task is None or self._closed:
            raise RuntimeError("engine is not running")
        if request.lora is not None:
            raise ValueError(f"LoRA adapter {request.lora!r}: the simulated engine serves no adapter")
        self.core.add(request)
        stream = self._streams[request.request_id] = RequestStream(request)
        self._wake.set()
        finished = False
        try:
            while not finished:
                delta = await stream.take()
                finished = delta.finished
                yield delta
        finally:
            if not finished:
                self._abort_now(request.request_id)

    async def abort(self, request_id: str) -> None:
        """Abort ``request_id`` if it runs, and free the blocks it holds for a remote decode if it is a
        finished prefill (the decode side will not pull them)."""
        self._abort_now(request_id)
        self.release_handoff(request_id)

    def load(self) -> EngineLoad:
        return dataclasses.replace(self.core.load(), kv_leases_expired=self.expired_leases)

    def _expire(self, lease: str) -> None:
        """A handoff's lease ran out before any decode read it: free its blocks, and count it."""
        if self.release_handoff(lease):
            self.expired_leases += 1

    async def kv_events(self) -> AsyncIterator[KvEventBatch]:
        while not self._closed:
            while self._events:
                yield self._events.popleft()
            self._events_ready.clear()
            await self._events_ready.wait()

    async def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        if _PEERS.get(self.engine_id) is self:
            del _PEERS[self.engine_id]
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._side_channel is not None:
            self._side_channel.close()
        for handle in (*self._leases.values(), *self._pulls.values()):
            handle.cancel()
        for task in self._checks:
            task.cancel()
        self._leases.clear()
        self._pulls.clear()
        for rid in list(self._streams):
            self._abort_now(rid)
        self._events_ready.set()

    # ----------------------------------------------------------------- beyond the protocol
    @property
    def running(self) -> bool:  # started, not shut down, and its loop alive (a health check's answer)
        return self._task is not None and not self._task.done() and not self._closed

    def release_handoff(self, key: str) -> bool:
        """Free now the blocks a finished prefill holds for a remote decode: ``key`` is a handoff's
        ``request_id`` (its lease key) or the request id (every lease of it). False if none held."""
        released = False
        for lease in self.core.leases(key):
            handle = self._leases.pop(lease, None)
            if handle is not None:
                handle.cancel()
            released = self.core.release(lease) or released
        if released:
            self._wake.set()
        return released

    # ----------------------------------------------------------------- the loop
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        clock = loop.time()
        while True:
            plan = self.core.begin_step()
            if plan is None:
                self._publish_events()
                self._wake.clear()
                await self._wake.wait()
                clock = loop.time()
                continue
            for pull in plan.schedule.pulls:
                self._start_pull(pull)
            if plan.schedule.chunks:
                now = loop.time()
                if clock < now - _MAX_CLOCK_LAG_S:
                    self.late_steps += 1
                    clock = now
                clock += plan.duration_s
                await asyncio.sleep(clock - now)
                self.steps += 1
                self._deliver(self.core.finish_step(plan))
            self._publish_events()

    def _deliver(self, outputs: list[Output]) -> None:
        for out in outputs:
            stream = self._streams.get(out.request_id)
            if stream is None:  # aborted meanwhile: nobody will pull blocks it holds
                if out.held_blocks is not None:
                    self.core.release(out.lease)
                continue
            handoff = self._hold(out, stream.request) if out.held_blocks is not None else None
            stream.push(out.token_ids, out.finish_reason, out.num_cached_tokens, handoff)
            if out.finish_reason is not None:
                del self._streams[out.request_id]

    def _hold(self, out: Output, request: EngineRequest) -> KVHandoff:
        lease = self.profile.lease_timeout_s
        loop = asyncio.get_running_loop()
        self._leases[out.lease] = loop.call_later(lease, self._expire, out.lease)
        assert out.held_blocks is not None
        return KVHandoff(
            engine_id=self.engine_id, block_ids=(out.held_blocks,), host=self.profile.handoff_host,
            port=self._side_channel_port, request_id=out.lease, first_token=out.token_ids[0],
            num_cached_tokens=out.num_cached_tokens, prompt_tokens=len(request.prompt_token_ids),
            lease_deadline=time.time() + lease)

    def _start_pull(self, pull: Pull) -> None:
        """Queue the pull on this host's NIC; it ends after the transfer time from its source host."""
        loop = asyncio.get_running_loop()
        stream = self._streams.get(pull.seq_id)
        source = stream.request.handoff.host if stream is not None and stream.request.handoff else ""
        nbytes = kv_bytes(self.profile, pull.num_blocks)
        seconds = self._link.transfer_seconds(source, nbytes)
        now = loop.time()
        done = self._nic.reserve(now, seconds) if seconds > 0 else now
        self._pulls[pull.seq_id] = loop.call_at(done, self._end_pull, pull, seconds, KvPull(nbytes, done - now))

    def _end_pull(self, pull: Pull, seconds: float, report: KvPull) -> None:
        """The modelled transfer time is over: check the source, then finish (a task, for the check)."""
        self._pulls.pop(pull.seq_id, None)
        task = asyncio.create_task(self._finish_pull(pull, seconds, report), name=f"pull-{pull.seq_id}")
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _finish_pull(self, pull: Pull, seconds: float, report: KvPull) -> None:
        stream = self._streams.get(pull.seq_id)
        if stream is None:
            return
        handoff = stream.request.handoff
        assert handoff is not None
        void = _check_source(handoff)
        if void is None and handoff.engine_id not in _PEERS:
            void = await notify_read(handoff)  # frees the blocks on the prefill side, as NIXL's notification
        if self._streams.get(pull.seq_id) is not stream or not self.core.is_live(pull.seq_id, pull.uid):
            return  # aborted meanwhile
        if void is not None:
            reason, error = void
            self.core.abort(pull.seq_id)
            del self._streams[pull.seq_id]
            stream.fail(KvPullError(reason, f"request {pull.seq_id!r}: {error}"))
        else:
            self.core.pull_done(pull, seconds)
            stream.pull = report
            source = _PEERS.get(handoff.engine_id)
            if source is not None:
                source.release_handoff(handoff.request_id)
        self._wake.set()
        self._publish_events()

    def _abort_now(self, request_id: str) -> None:
        handle = self._pulls.pop(request_id, None)
        if handle is not None:
            handle.cancel()
        self.core.abort(request_id)
        stream = self._streams.pop(request_id, None)
        if stream is not None:
            stream.push((), "abort", stream.cached)
        self._wake.set()

    def _publish_events(self) -> None:
        batch = self.core.drain_events(time.time())
        if batch is not None:
            self._events.append(batch)
            self._events_ready.set()


def _check_source(handoff: KVHandoff) -> tuple[str, str] | None:
    """Why the handoff's blocks cannot be read now (a ``HandoffVoid`` reason and a message), or None if
    they can. An engine of this process is asked; another process's engine is judged by the lease."""
    source = _PEERS.get(handoff.engine_id)
    if source is not None:
        held = source.core.held_blocks(handoff.request_id)
        if held is None or (held,) != handoff.block_ids:
            return "source_gone", f"engine {handoff.engine_id!r} no longer holds the blocks of {handoff.request_id!r}"
        return None
    if handoff.lease_deadline and time.time() > handoff.lease_deadline:
        return "lease_expired", f"the lease on engine {handoff.engine_id!r} expired before the pull finished"
    return None
