"""Continuous batching with chunked prefill, FIFO admission, recompute preemption and KV pulls.

One ``schedule()`` call plans one engine step under a token budget (``max_num_batched_tokens``) and a
cap on running sequences (``max_num_seqs``), the way vLLM's v1 scheduler does:

1. running sequences first, in arrival order: each gets the tokens it still has to compute (one for
   a decoding sequence, the rest of its prompt, cut to the remaining budget, for a prefilling one).
   If the pool cannot hold them, the most recently admitted running sequence is preempted (its
   blocks freed, its progress reset, put back at the head of the waiting queue) until it fits;
2. if nothing was preempted: sequences whose KV pull finished, then the waiting queue strictly in
   FIFO order (the head blocks the rest when its blocks do not fit). A waiting sequence marked
   ``pull`` gets blocks for its whole prompt and starts a pull instead of computing; it takes no
   budget and runs once ``pull_done`` is called, with every prompt token but the last computed.

Sequences are mutable records owned here; plans (``ScheduleOutput``) are frozen. The scheduler never
samples or decides when a sequence ends: the engine applies a plan's results and calls ``finish``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

from worker.engines.sim.block_manager import BlockManager


class Status(Enum):
    WAITING = "waiting"
    PULLING = "pulling"
    READY = "ready"  # pulled, waiting for a running slot
    RUNNING = "running"


@dataclass(eq=False)
class Sequence:
    """One request's tokens and progress. ``token_ids`` is the prompt followed by the output so far;
    ``num_computed`` how many of them have KV in the cache; ``num_cached`` the prompt tokens found in
    the prefix cache or pulled at first admission (-1 before)."""

    seq_id: str
    token_ids: list[int]
    num_prompt_tokens: int
    cache_salt: str | None = None
    pull: bool = False
    num_computed: int = 0
    num_cached: int = -1
    status: Status = Status.WAITING
    uid: int = 0  # set by ``Scheduler.add``


@dataclass(frozen=True)
class Chunk:
    """``num_new`` tokens of ``seq_id`` computed this step, after ``num_computed`` already were.
    ``uid`` tells a re-added request apart from an aborted one with the same id."""

    seq_id: str
    uid: int
    num_computed: int
    num_new: int
    decode: bool


@dataclass(frozen=True)
class Pull:
    """Start pulling ``num_blocks`` blocks of ``seq_id``'s prompt (those not in the local cache)."""

    seq_id: str
    uid: int
    num_local_cached_tokens: int
    num_blocks: int


@dataclass(frozen=True)
class ScheduleOutput:
    chunks: tuple[Chunk, ...] = ()
    pulls: tuple[Pull, ...] = ()
    preempted: tuple[str, ...] = ()

    @property
    def num_tokens(self) -> int:
        return sum(c.num_new for c in self.chunks)


class Scheduler:
    """Queues of sequences over one ``BlockManager``; see the module docstring for the policy."""

    def __init__(self, blocks: BlockManager, *, max_num_seqs: int, max_num_batched_tokens: int) -> None:
        self.blocks = blocks
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self._seqs: dict[str, Sequence] = {}
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.pulling: dict[str, Sequence] = {}
        self.ready: deque[Sequence] = deque()
        self.num_preemptions = 0
        self.prefix_cache_queries = 0  # prompt tokens looked up at first admission
        self.prefix_cache_hits = 0  # of those, tokens found in the local prefix cache
        self._next_uid = 1

    # ----------------------------------------------------------------- queries
    def get(self, seq_id: str) -> Sequence | None:
        return self._seqs.get(seq_id)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        """Sequences admitted to no step yet: waiting, pulling KV, or pulled and waiting for a slot."""
        return len(self.waiting) + len(self.pulling) + len(self.ready)

    def has_work(self) -> bool:
        """True if a step may do something (a pull alone in flight needs no step)."""
        return bool(self.running or self.ready or self.waiting)

    # ----------------------------------------------------------------- lifecycle
    def add(self, seq: Sequence) -> None:
        """Queue ``seq`` at the tail. ``ValueError`` if its id is live here or holds blocks."""
        if seq.seq_id in self._seqs or self.blocks.has(seq.seq_id):
            raise ValueError(f"request id {seq.seq_id!r} is already in use")
        seq.status = Status.WAITING
        seq.uid = self._next_uid
        self._next_uid += 1
        self._seqs[seq.seq_id] = seq
        self.waiting.append(seq)

    def abort(self, seq_id: str) -> bool:
        """Forget ``seq_id`` wherever it is and free its blocks; False if unknown."""
        seq = self._seqs.pop(seq_id, None)
        if seq is None:
            return False
        if seq.status is Status.PULLING:
            del self.pulling[seq_id]
        else:
            queues = {Status.RUNNING: self.running, Status.WAITING: self.waiting, Status.READY: self.ready}
            queues[seq.status].remove(seq)
        if self.blocks.has(seq_id):
            self.blocks.free(seq_id)
        return True

    def finish(self, seq_id: str, *, keep_blocks: bool = False) -> None:
        """Remove a running sequence. Its blocks are freed unless ``keep_blocks`` (then the caller
        owns them in the block manager under ``seq_id`` and must ``blocks.free`` them later)."""
        seq = self._seqs.pop(seq_id)
        self.running.remove(seq)
        if not keep_blocks:
            self.blocks.free(seq_id)

    def pull_done(self, seq_id: str) -> None:
        """The pulled prompt KV has arrived: all prompt tokens but the last count as computed (the
        last is recomputed to sample the first output token) and full blocks enter the cache."""
        seq = self.pulling.pop(seq_id)
        seq.num_computed = max(seq.num_prompt_tokens - 1, 0)
        seq.num_cached = seq.num_computed
        seq.pull = False
        self.blocks.commit(seq_id, seq.token_ids, seq.num_computed)
        seq.status = Status.READY
        self.ready.append(seq)

    # ----------------------------------------------------------------- planning
    def schedule(self) -> ScheduleOutput:
        budget = self.max_num_batched_tokens
        chunks: list[Chunk] = []
        preempted: list[str] = []
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(len(seq.token_ids) - seq.num_computed, budget)
            while not self.blocks.grow(seq.seq_id, seq.num_computed + n):
                victim = self.running.pop()
                self._preempt(victim)
                preempted.append(victim.seq_id)
                if victim is seq:
                    break
            if seq.status is not Status.RUNNING:  # it preempted itself: nothing more fits
                break
            chunks.append(self._chunk(seq, n))
            budget -= n
            i += 1
        pulls: list[Pull] = []
        if not preempted:
            budget = self._admit_ready(budget, chunks)
            self._admit_waiting(budget, chunks, pulls)
        return ScheduleOutput(tuple(chunks), tuple(pulls), tuple(preempted))

    def _admit_ready(self, budget: int, chunks: list[Chunk]) -> int:
        while self.ready and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.ready[0]
            n = min(len(seq.token_ids) - seq.num_computed, budget)
            if not self.blocks.grow(seq.seq_id, seq.num_computed + n):
                break
            self.ready.popleft()
            self._run(seq)
            chunks.append(self._chunk(seq, n))
            budget -= n
        return budget

    def _admit_waiting(self, budget: int, chunks: list[Chunk], pulls: list[Pull]) -> None:
        blocks = self.blocks
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if seq.pull:
                cached = blocks.allocate(seq.seq_id, seq.token_ids, seq.num_prompt_tokens, seq.cache_salt)
                if cached is None:
                    return
                self.waiting.popleft()
                self._count_lookup(seq, cached)
                seq.num_computed = cached
                seq.status = Status.PULLING
                self.pulling[seq.seq_id] = seq
                remote = blocks.blocks_for(seq.num_prompt_tokens) - cached // blocks.block_size
                pulls.append(Pull(seq.seq_id, seq.uid, cached, remote))
                continue
            cached = blocks.match(seq.token_ids, seq.cache_salt)
            n = min(len(seq.token_ids) - cached, budget)
            if blocks.allocate(seq.seq_id, seq.token_ids, cached + n, seq.cache_salt) is None:
                return
            self.waiting.popleft()
            seq.num_computed = cached
            if seq.num_cached < 0:
                seq.num_cached = cached
                self._count_lookup(seq, cached)
            self._run(seq)
            chunks.append(self._chunk(seq, n))
            budget -= n

    def _count_lookup(self, seq: Sequence, cached: int) -> None:
        self.prefix_cache_queries += seq.num_prompt_tokens
        self.prefix_cache_hits += cached

    def _run(self, seq: Sequence) -> None:
        seq.status = Status.RUNNING
        self.running.append(seq)

    def _chunk(self, seq: Sequence, n: int) -> Chunk:
        decode = n == 1 and seq.num_computed >= seq.num_prompt_tokens
        return Chunk(seq.seq_id, seq.uid, seq.num_computed, n, decode)

    def _preempt(self, seq: Sequence) -> None:
        self.blocks.free(seq.seq_id)
        seq.num_computed = 0
        seq.pull = False
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1
