"""The simulated engine core: block manager + scheduler + timing + a deterministic pseudo-model.

Synchronous and clock-free; the asyncio adapter drives it. One step is two calls:

* ``begin_step()`` plans the step (admission, preemption, KV pulls to start) and returns a frozen
  ``StepPlan`` with its modelled duration, or None when there is nothing to compute;
* ``finish_step(plan)`` applies the step's results once that duration has passed: computed tokens
  enter the prefix cache, sequences whose tokens are all computed sample one token, finished
  requests leave. Chunks of requests aborted in between are skipped.

The pseudo-model makes token ``p`` (its index in prompt + output) of a request a hash of (prompt hash,
``p``, sampling nonce, profile seed) mod ``vocab_size``; the prompt hash leaves out the answer's own
tokens a request carries (``answer_prefix``), so a decode that continues after the prefill's first token
samples on from it. The nonce is 0 for greedy requests (``temperature == 0``), derived from ``seed`` for
seeded ones and random otherwise, so greedy and seeded outputs are reproducible and a prefill + remote
decode produces exactly the tokens a colocated run does. EOS is emitted only with probability
``eos_probability`` per position.
"""

from __future__ import annotations

import random
from array import array
from dataclasses import dataclass

import xxhash

from protocol.types import EngineLoad, KvEventBatch
from worker.engine import EngineRequest
from worker.engines.sim.block_manager import BlockManager
from worker.engines.sim.profile import SimProfile
from worker.engines.sim.scheduler import Chunk, Pull, ScheduleOutput, Scheduler, Sequence, Status
from worker.engines.sim.timing import StepShape, chunk_attn_pairs, kv_bytes, step_time


@dataclass(frozen=True)
class StepPlan:
    schedule: ScheduleOutput
    duration_s: float


@dataclass(frozen=True)
class Output:
    """One request's result of one step. ``held_blocks`` is set when a ``remote_decode`` request
    finished and its prompt's blocks are now held for a remote decode under the lease key ``lease``
    (``"<request id>@<n>"``, so the request id itself is free for reuse; see ``release``)."""

    request_id: str
    token_ids: tuple[int, ...]
    finish_reason: str | None
    num_cached_tokens: int
    held_blocks: tuple[int, ...] | None = None
    lease: str = ""


@dataclass(frozen=True)
class PullStats:
    pulls: int = 0
    blocks: int = 0
    bytes: int = 0
    seconds: float = 0.0


@dataclass
class _Request:
    request: EngineRequest
    seq: Sequence
    prompt_key: int
    nonce: int
    max_tokens: int


class SimEngineCore:
    """One simulated engine's state. Not thread-safe; every method returns quickly."""

    def __init__(self, profile: SimProfile) -> None:
        self.profile = profile
        self.max_model_len = profile.effective_max_model_len
        self.blocks = BlockManager(profile.num_blocks, profile.block_size,
                                   enable_caching=profile.enable_prefix_caching)
        self.scheduler = Scheduler(self.blocks, max_num_seqs=profile.max_num_seqs,
                                   max_num_batched_tokens=profile.max_num_batched_tokens)
        self._reqs: dict[str, _Request] = {}
        self._held: dict[str, tuple[int, ...]] = {}
        self._rng = random.Random(profile.seed)
        self.pull_stats = PullStats()

    # ----------------------------------------------------------------- requests
    def add(self, request: EngineRequest) -> None:
        """Queue a request. ``ValueError`` for a malformed one or an id in use (running or holding)."""
        self._validate(request)
        prompt = request.prompt_token_ids
        sampling = request.sampling
        if sampling.temperature == 0:
            nonce = 0
        elif sampling.seed is not None:
            nonce = 1 + (sampling.seed % (1 << 62))
        else:
            nonce = (1 << 62) + self._rng.getrandbits(61)
        seq = Sequence(request.request_id, list(prompt), len(prompt), request.cache_salt,
                       pull=request.handoff is not None)
        self.scheduler.add(seq)
        # The pseudo-model hashes the prompt without the answer's tokens it carries (``answer_prefix``), so
        # a decode that continues after the prefill's first token samples on as one engine would have.
        key = xxhash.xxh3_64_intdigest(array("q", prompt[:len(prompt) - request.answer_prefix]).tobytes())
        max_tokens = 1 if request.remote_decode else sampling.max_tokens
        self._reqs[request.request_id] = _Request(request, seq, key, nonce, max_tokens)

    def abort(self, request_id: str) -> bool:
        """Drop a queued or running request and free its blocks; False if unknown or finished."""
        if self._reqs.pop(request_id, None) is None:
            return False
        self.scheduler.abort(request_id)
        return True

    def leases(self, key: str) -> list[str]:
        """Lease keys named by ``key``: itself if it is one, else every lease of request id ``key``."""
        if key in self._held:
            return [key]
        return [k for k in self._held if k.rpartition("@")[0] == key]

    def release(self, lease: str) -> bool:
        """Free the blocks held under lease key ``lease``; False if none are."""
        if self._held.pop(lease, None) is None:
            return False
        self.blocks.free(lease)
        return True

    def held_blocks(self, lease: str) -> tuple[int, ...] | None:
        """The blocks held under lease key ``lease``, or None."""
        return self._held.get(lease)

    def is_live(self, request_id: str, uid: int) -> bool:
        seq = self.scheduler.get(request_id)
        return seq is not None and seq.uid == uid

    def pull_done(self, pull: Pull, seconds: float) -> bool:
        """The KV of ``pull`` has arrived; False (nothing done) if its request was aborted since."""
        seq = self.scheduler.get(pull.seq_id)
        if seq is None or seq.uid != pull.uid or seq.status is not Status.PULLING:
            return False
        self.scheduler.pull_done(pull.seq_id)
        s = self.pull_stats
        self.pull_stats = PullStats(s.pulls + 1, s.blocks + pull.num_blocks,
                                    s.bytes + kv_bytes(self.profile, pull.num_blocks), s.seconds + seconds)
        return True

    # ----------------------------------------------------------------- steps
    def begin_step(self) -> StepPlan | None:
        """Plan one step; None if it would neither compute nor start a pull."""
        if not self.scheduler.has_work():
            return None
        schedule = self.scheduler.schedule()
        if not schedule.chunks and not schedule.pulls:
            return None
        return StepPlan(schedule, step_time(self.profile, _shape(schedule.chunks)))

    def finish_step(self, plan: StepPlan) -> list[Output]:
        outputs = []
        for chunk in plan.schedule.chunks:
            req = self._reqs.get(chunk.seq_id)
            seq = req.seq if req is not None else None
            if req is None or seq is None or seq.uid != chunk.uid or seq.status is not Status.RUNNING:
                continue
            seq.num_computed += chunk.num_new
            self.blocks.commit(seq.seq_id, seq.token_ids, seq.num_computed)
            if seq.num_computed < len(seq.token_ids):
                continue  # a prefill chunk with more to come
            token = self._sample(req, len(seq.token_ids))
            seq.token_ids.append(token)
            reason = self._finish_reason(req, token)
            held, lease = None, ""
            if reason is not None:
                del self._reqs[seq.seq_id]
                keep = req.request.remote_decode
                self.scheduler.finish(seq.seq_id, keep_blocks=keep)
                if keep:
                    lease = f"{seq.seq_id}@{seq.uid}"
                    self.blocks.rename(seq.seq_id, lease)
                    held = self._held[lease] = self.blocks.block_table(lease)
            outputs.append(Output(seq.seq_id, (token,), reason, max(seq.num_cached, 0), held, lease))
        return outputs

    # ----------------------------------------------------------------- observation
    def load(self) -> EngineLoad:
        s = self.pull_stats
        return EngineLoad(
            running=self.scheduler.num_running, waiting=self.scheduler.num_waiting,
            kv_usage=self.blocks.usage, prefix_cache_queries=self.scheduler.prefix_cache_queries,
            prefix_cache_hits=self.scheduler.prefix_cache_hits, kv_blocks_pulled=s.blocks,
            kv_bytes_pulled=s.bytes, kv_pull_seconds=s.seconds, kv_pulls=s.pulls)

    def drain_events(self, timestamp: float) -> KvEventBatch | None:
        return self.blocks.drain_events(timestamp)

    # ----------------------------------------------------------------- internals
    def _validate(self, request: EngineRequest) -> None:
        prompt, p = request.prompt_token_ids, self.profile
        if not prompt:
            raise ValueError("prompt is empty")
        if len(prompt) >= self.max_model_len:
            raise ValueError(f"prompt of {len(prompt)} tokens leaves no room in max_model_len "
                             f"{self.max_model_len}")
        if request.sampling.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {request.sampling.max_tokens}")
        shaping = request.sampling.shaping()
        if request.sampling.logprobs is not None:
            shaping["logprobs"] = request.sampling.logprobs
        if shaping:  # its tokens are hashes of the prompt and position, not samples of a distribution
            raise ValueError(f"the sim engine does not model {', '.join(sorted(shaping))}")
        if min(prompt) < 0 or max(prompt) >= p.vocab_size:
            raise ValueError(f"token id out of range [0, {p.vocab_size})")
        handoff = request.handoff
        if handoff is not None:
            if request.remote_decode:
                raise ValueError("a request cannot both pull a handoff and be a remote-decode prefill")
            if len(handoff.block_ids) != 1:
                raise ValueError(f"handoff has {len(handoff.block_ids)} KV-cache groups; sim engines have 1")
            if handoff.num_blocks != self.blocks.blocks_for(len(prompt)):
                raise ValueError(f"handoff has {handoff.num_blocks} blocks; a {len(prompt)}-token prompt "
                                 f"needs {self.blocks.blocks_for(len(prompt))} of {p.block_size} tokens")
            if handoff.prompt_tokens not in (0, len(prompt) - request.answer_prefix):
                raise ValueError(f"handoff is for {handoff.prompt_tokens} prompt tokens, got {len(prompt)} "
                                 f"of which {request.answer_prefix} are the answer's")
        if request.request_id in self._reqs:
            raise ValueError(f"request id {request.request_id!r} is already in use")

    def _sample(self, req: _Request, position: int) -> int:
        p = self.profile
        h = xxhash.xxh3_64_intdigest(array("Q", (req.prompt_key, position, req.nonce)).tobytes(), seed=p.seed)
        if p.eos_probability and (h >> 32) < p.eos_probability * 4294967296.0:
            return p.eos_token_id
        token = (h & 0xFFFFFFFF) % p.vocab_size
        return token if token != p.eos_token_id else (token + 1) % p.vocab_size

    def _finish_reason(self, req: _Request, token: int) -> str | None:
        sampling, seq = req.request.sampling, req.seq
        if (token == self.profile.eos_token_id and not sampling.ignore_eos) or token in sampling.stop_token_ids:
            return "stop"
        if len(seq.token_ids) - seq.num_prompt_tokens >= req.max_tokens or len(seq.token_ids) >= self.max_model_len:
            return "length"
        return None


def _shape(chunks: tuple[Chunk, ...]) -> StepShape:
    prefill = pairs = decode = context = 0
    for c in chunks:
        if c.decode:
            decode += 1
            context += c.num_computed + 1
        else:
            prefill += c.num_new
            pairs += chunk_attn_pairs(c.num_computed, c.num_new)
    return StepShape(prefill, pairs, decode, context)
