"""Scheduler: token budget, seat cap, chunked prefill, FIFO admission, preemption, pulls, abort."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.engines.sim.block_manager import BlockManager
from worker.engines.sim.scheduler import ScheduleOutput, Scheduler, Sequence, Status

BS = 4


def make(num_blocks: int = 64, max_num_seqs: int = 8, budget: int = 16) -> Scheduler:
    return Scheduler(BlockManager(num_blocks, BS), max_num_seqs=max_num_seqs, max_num_batched_tokens=budget)


def seq(seq_id: str, prompt_len: int, base: int = 0, pull: bool = False) -> Sequence:
    tokens = [base + i for i in range(prompt_len)]
    return Sequence(seq_id, tokens, prompt_len, pull=pull)


def apply(s: Scheduler, out: ScheduleOutput, max_out: int = 1_000_000) -> list[str]:
    """Play the engine: computed tokens advance, complete sequences sample a token; return finished."""
    done = []
    for c in out.chunks:
        q = s.get(c.seq_id)
        assert q is not None and q.uid == c.uid and q.num_computed == c.num_computed
        q.num_computed += c.num_new
        s.blocks.commit(q.seq_id, q.token_ids, q.num_computed)
        if q.num_computed == len(q.token_ids):
            q.token_ids.append(7)
            if len(q.token_ids) - q.num_prompt_tokens >= max_out:
                s.finish(q.seq_id)
                done.append(q.seq_id)
    return done


def test_budget_and_seat_cap_are_respected_and_prefill_is_chunked() -> None:
    s = make(max_num_seqs=3, budget=16)
    for i in range(5):
        s.add(seq(f"r{i}", 10, base=100 * i))
    out = s.schedule()
    assert out.num_tokens == 16
    assert [(c.seq_id, c.num_new) for c in out.chunks] == [("r0", 10), ("r1", 6)]
    apply(s, out)
    out = s.schedule()
    # r0 decodes (1), r1 finishes its prompt (4), r2 is admitted with the rest of the budget (10)
    assert [(c.seq_id, c.num_computed, c.num_new, c.decode) for c in out.chunks] == [
        ("r0", 10, 1, True), ("r1", 6, 4, False), ("r2", 0, 10, False)]
    apply(s, out)
    out = s.schedule()
    assert s.num_running == 3 and s.num_waiting == 2  # seat cap: r3, r4 wait
    assert all(c.num_new == 1 for c in out.chunks)


def test_waiting_queue_is_fifo_head_of_line_blocks() -> None:
    s = make(num_blocks=8, budget=64)
    s.add(seq("hog", 20))  # 5 blocks
    apply(s, s.schedule())
    s.add(seq("big", 16, base=500))  # needs 4 blocks, only 3 free
    s.add(seq("small", 2, base=900))  # would fit
    out = s.schedule()
    assert [c.seq_id for c in out.chunks] == ["hog"]
    assert [q.seq_id for q in s.waiting] == ["big", "small"]
    s.finish("hog")
    out = s.schedule()
    assert [c.seq_id for c in out.chunks] == ["big", "small"]


def test_prefix_hits_skip_computed_tokens() -> None:
    s = make(budget=64)
    s.add(seq("a", 10))
    apply(s, s.schedule())
    s.finish("a")
    s.add(seq("b", 12))  # same first 10 tokens: 2 full blocks cached
    (chunk,) = s.schedule().chunks
    assert (chunk.num_computed, chunk.num_new) == (8, 4)
    assert s.prefix_cache_queries == 22 and s.prefix_cache_hits == 8
    b = s.get("b")
    assert b is not None and b.num_cached == 8


def test_out_of_blocks_preempts_the_latest_running_sequence() -> None:
    s = make(num_blocks=6, budget=64)
    s.add(seq("old", 8))  # 2 blocks, then grows
    s.add(seq("new", 8, base=50))
    apply(s, s.schedule())  # both prefilled: 4 blocks used, 2 free
    steps_until_preempt = 0
    while True:
        out = s.schedule()
        steps_until_preempt += 1
        if out.preempted:
            break
        apply(s, out)
    assert out.preempted == ("new",)
    assert [c.seq_id for c in out.chunks] == ["old"]
    new = s.get("new")
    assert new is not None and new.status is Status.WAITING and new.num_computed == 0
    assert not s.blocks.has("new") and s.waiting[0] is new
    assert len(new.token_ids) > 8  # the output so far is kept and will be recomputed
    assert s.num_preemptions == 1
    apply(s, out)
    s.finish("old")
    out = s.schedule()
    (chunk,) = out.chunks
    assert chunk.seq_id == "new" and chunk.num_new + chunk.num_computed == len(new.token_ids)


def test_a_sequence_alone_that_cannot_grow_preempts_itself() -> None:
    s = make(num_blocks=2, budget=64)
    s.add(seq("a", 8))
    apply(s, s.schedule())
    out = s.schedule()
    assert out.preempted == ("a",) and out.chunks == ()
    assert s.num_running == 0 and s.blocks.num_free_blocks == 2


def test_pull_gets_whole_prompt_blocks_then_runs_its_last_token() -> None:
    s = make(budget=64)
    s.add(seq("local", 9))
    apply(s, s.schedule())
    s.finish("local")
    s.add(seq("d", 14, pull=True))  # first 8 tokens cached locally, blocks 3 and 4 to pull
    out = s.schedule()
    assert out.chunks == ()
    (pull,) = out.pulls
    assert (pull.seq_id, pull.num_local_cached_tokens, pull.num_blocks) == ("d", 8, 2)
    assert s.num_waiting == 1 and len(s.blocks.block_table("d")) == 4
    assert s.schedule().chunks == ()  # nothing runs until the pull lands
    s.pull_done("d")
    (chunk,) = s.schedule().chunks
    assert (chunk.num_computed, chunk.num_new) == (13, 1)
    assert s.blocks.match([*range(14), 0]) == 12  # pulled full blocks are now cached


def test_abort_frees_blocks_in_every_state() -> None:
    s = make(num_blocks=16, budget=8)
    s.add(seq("pull", 8, base=100, pull=True))
    s.add(seq("run", 12))
    apply(s, s.schedule())  # pull: started (it takes no budget); run: 8 of 12 computed
    s.add(seq("wait", 4, base=200))
    assert s.get("pull") is not None and s.get("pull").status is Status.PULLING  # type: ignore[union-attr]
    for rid in ("run", "pull", "wait"):
        assert s.abort(rid)
        assert not s.blocks.has(rid)
    assert not s.abort("run")
    assert s.blocks.num_free_blocks == 16 and not s.has_work()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 30), st.integers(1, 6), st.booleans()), min_size=1, max_size=12),
       st.integers(4, 24), st.integers(1, 4), st.data())
def test_random_workloads_respect_limits_and_all_finish(
        reqs: list[tuple[int, int, bool]], budget: int, seats: int, data: st.DataObject) -> None:
    s = make(num_blocks=12, max_num_seqs=seats, budget=budget)
    max_out = {}
    for i, (plen, out_len, shared) in enumerate(reqs):
        s.add(seq(f"r{i}", plen, base=0 if shared else 1000 * (i + 1)))
        max_out[f"r{i}"] = out_len
    finished: set[str] = set()
    for _ in range(2000):
        if not s.has_work():
            break
        out = s.schedule()
        assert out.num_tokens <= budget and s.num_running <= seats
        for c in out.chunks:
            q = s.get(c.seq_id)
            assert q is not None and c.num_computed + c.num_new <= len(q.token_ids)
            assert len(s.blocks.block_table(c.seq_id)) * BS >= c.num_computed + c.num_new
        if data.draw(st.integers(0, 20), label="abort?") == 0 and s.running:
            victim = s.running[0].seq_id
            s.abort(victim)
            finished.add(victim)
            out = ScheduleOutput(tuple(c for c in out.chunks if c.seq_id != victim))
        for c in out.chunks:
            q = s.get(c.seq_id)
            assert q is not None
            q.num_computed += c.num_new
            s.blocks.commit(q.seq_id, q.token_ids, q.num_computed)
            if q.num_computed == len(q.token_ids):
                q.token_ids.append(3)
                if len(q.token_ids) - q.num_prompt_tokens >= max_out[q.seq_id]:
                    s.finish(q.seq_id)
                    finished.add(q.seq_id)
    assert finished == set(max_out), "every request finishes (no livelock under preemption)"
    assert s.blocks.num_free_blocks == 12 and s.blocks.usage == 0.0
