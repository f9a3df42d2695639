"""BlockManager invariants under random operation sequences (hypothesis state machine).

Tokens come from a 2-letter alphabet and blocks are 2 tokens long, so prefixes collide, sequences
share blocks, the small pool fills up and eviction happens constantly. A reference tracks what the
events say is cached (replayed into a set) and what every sequence holds.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from protocol.types import BlockRemoved, BlockStored
from worker.engines.sim.block_manager import BlockManager, block_hash

BS, NUM_BLOCKS = 2, 8
TOKENS = st.lists(st.integers(0, 1), min_size=1, max_size=12)
SALTS = st.sampled_from([None, None, "t"])


class BlockManagerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.bm = BlockManager(NUM_BLOCKS, BS)
        self.replayed: set[int] = set()
        self.ever_stored: set[int] = set()
        self.tokens: dict[str, list[int]] = {}
        self.salt: dict[str, str | None] = {}
        self.computed: dict[str, int] = {}
        self.next_id = 0
        self.freed: list[tuple[list[int], str | None]] = []  # prompts of freed sequences, for re-use

    # ------------------------------------------------------------------ reference
    def reference_cached_tokens(self, tokens: list[int], salt: str | None) -> int:
        """Longest run of leading full blocks the events say are cached, ending before the last token."""
        n = 0
        for h in self.bm.prefix_hashes(tokens, salt)[: (len(tokens) - 1) // BS]:
            if h not in self.replayed:
                break
            n += 1
        return n * BS

    def replay(self) -> None:
        for ev in self.bm.take_events():
            if isinstance(ev, BlockStored):
                parent = ev.parent_block_hash
                assert len(ev.token_ids) == BS * len(ev.block_hashes)
                # The parent was stored once; it may have been evicted since, while this sequence kept
                # its own unregistered copy of that block (see block_manager's contracts).
                assert parent is None or parent in self.ever_stored
                for i, h in enumerate(ev.block_hashes):  # a router can re-derive every hash
                    salt = ev.cache_salt if (i == 0 and parent is None) else None
                    parent = block_hash(parent, ev.token_ids[i * BS:(i + 1) * BS], salt)
                    assert parent == h
                    assert h not in self.replayed, "stored twice without removal"
                    self.replayed.add(h)
                    self.ever_stored.add(h)
            else:
                assert isinstance(ev, BlockRemoved)
                for h in ev.block_hashes:
                    assert h in self.replayed, "removed a block never stored"
                    self.replayed.remove(h)

    # ------------------------------------------------------------------ operations
    @rule(tokens=TOKENS, salt=SALTS, data=st.data())
    def allocate(self, tokens: list[int], salt: str | None, data: st.DataObject) -> None:
        self._allocate(tokens, salt, data)

    @precondition(lambda self: self.freed)
    @rule(data=st.data(), tail=st.lists(st.integers(0, 1), max_size=6))
    def reallocate(self, data: st.DataObject, tail: list[int]) -> None:
        """A prompt extending a finished one: hits cached blocks that are free (evictable)."""
        tokens, salt = data.draw(st.sampled_from(self.freed[-3:]), label="earlier")
        self._allocate(tokens + tail, salt, data)

    def _allocate(self, tokens: list[int], salt: str | None, data: st.DataObject) -> None:
        self.replay()
        expected = self.reference_cached_tokens(tokens, salt)
        assert self.bm.match(tokens, salt) == expected
        num_tokens = data.draw(st.integers(expected, len(tokens)), label="num_tokens")
        seq_id = f"s{self.next_id}"
        self.next_id += 1
        free_before = self.bm.num_free_blocks
        cached = self.bm.allocate(seq_id, tokens, num_tokens, salt)
        if cached is None:
            assert self.bm.num_free_blocks == free_before and not self.bm.has(seq_id)
            return
        assert cached == expected
        self.tokens[seq_id], self.salt[seq_id], self.computed[seq_id] = list(tokens), salt, cached

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def compute(self, data: st.DataObject) -> None:
        """Compute some more tokens of a sequence (growing its table first), like a prefill chunk."""
        seq_id = data.draw(st.sampled_from(sorted(self.tokens)), label="seq")
        target = data.draw(st.integers(self.computed[seq_id], len(self.tokens[seq_id])), label="target")
        if self.bm.grow(seq_id, target):
            self.bm.commit(seq_id, self.tokens[seq_id], target)
            self.computed[seq_id] = target

    @precondition(lambda self: self.tokens)
    @rule(data=st.data(), token=st.integers(0, 1))
    def decode(self, data: st.DataObject, token: int) -> None:
        """A fully computed sequence samples a token and computes it."""
        seq_id = data.draw(st.sampled_from(sorted(self.tokens)), label="seq")
        tokens = self.tokens[seq_id]
        if self.computed[seq_id] == len(tokens) and self.bm.grow(seq_id, len(tokens) + 1):
            tokens.append(token)
            self.bm.commit(seq_id, tokens, len(tokens))
            self.computed[seq_id] = len(tokens)

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        seq_id = data.draw(st.sampled_from(sorted(self.tokens)), label="seq")
        self.bm.free(seq_id)
        self.freed.append((self.tokens[seq_id], self.salt[seq_id]))
        del self.tokens[seq_id], self.salt[seq_id], self.computed[seq_id]

    # ------------------------------------------------------------------ invariants
    @invariant()
    def refcounts_match_tables(self) -> None:
        holders = [0] * NUM_BLOCKS
        for seq_id in self.tokens:
            table = self.bm.block_table(seq_id)
            assert len(set(table)) == len(table), "a block twice in one table"
            assert len(table) * BS >= self.computed[seq_id]
            for b in table:
                holders[b] += 1
        for b in range(NUM_BLOCKS):
            assert self.bm.ref_count(b) == holders[b]
            assert self.bm.is_free(b) == (holders[b] == 0), f"block {b} free/referenced mismatch"
            if holders[b] > 1:
                assert self.bm.block_hash_of(b) is not None, "shared block that is not cached"
        assert self.bm.num_free_blocks == holders.count(0)

    @invariant()
    def events_reproduce_the_cache(self) -> None:
        self.replay()
        assert self.replayed == set(self.bm.cached_block_hashes())
        for h in self.replayed:
            assert any(self.bm.block_hash_of(b) == h for b in range(NUM_BLOCKS))


BlockManagerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None, database=None)
TestBlockManagerMachine = BlockManagerMachine.TestCase
