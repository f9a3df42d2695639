"""Workload generators: determinism, shapes of the requests they make (bench.workloads)."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench.spec import Message, RequestSpec
from bench.textgen import TextGen, vocabulary
from bench.workloads import WORKLOADS, WorkloadParams, generate
from bench.workloads.docqa import zipf_weights

SMALL = WorkloadParams(
    num_requests=24, max_tokens=16, system_words=40, user_words=8, answer_words=6, doc_words=60,
    question_words=5, prompt_words=20, num_docs=4, turns=3,
)  # fmt: skip
REPO = Path(__file__).resolve().parents[3]
SYNTHETIC = sorted(set(WORKLOADS) - {"trace"})


@pytest.mark.parametrize("name", SYNTHETIC)
def test_same_seed_same_requests_other_seed_other_requests(name: str) -> None:
    a, b, c = generate(name, SMALL, 7), generate(name, SMALL, 7), generate(name, SMALL, 8)
    assert len(a) == SMALL.num_requests
    assert a == b
    assert [s.as_prompt() for s in a] != [s.as_prompt() for s in c]


def test_requests_do_not_depend_on_the_process_hash_seed() -> None:
    code = (
        "import hashlib;from bench.workloads import generate, WorkloadParams;"
        "p=WorkloadParams(num_requests=12, system_words=20, doc_words=30, prompt_words=10);"
        "print(hashlib.sha256(repr([generate(n, p, 3) for n in ('chat','docqa','unique','mix')]).encode()).hexdigest())"
    )
    outs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outs.add(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=REPO
            ).stdout
        )
    assert len(outs) == 1


def test_chat_sessions_share_the_system_prompt_and_grow_their_history() -> None:
    params = WorkloadParams(num_requests=6, sessions=2, turns=3, system_words=30, user_words=5, answer_words=4)
    specs = generate("chat", params, 1)
    assert [s.request_id for s in specs] == [f"chat-s{i}-t{t}" for t in range(3) for i in range(2)]
    systems = {s.messages[0] for s in specs if s.messages}
    assert len(systems) == 1 and next(iter(systems)).role == "system"
    s0 = [s for s in specs if s.session_id == "chat-s0"]
    assert [s.turn for s in s0] == [0, 1, 2]
    for prev, cur in itertools.pairwise(s0):
        assert prev.messages is not None and cur.messages is not None
        assert cur.messages[: len(prev.messages)] == prev.messages  # each turn extends the last one
        assert [m.role for m in cur.messages[len(prev.messages) :]] == ["assistant", "user"]
    s1 = [s for s in specs if s.session_id == "chat-s1"]
    assert s0[0].messages != s1[0].messages


def test_chat_session_text_does_not_depend_on_the_number_of_sessions() -> None:
    few = generate("chat", WorkloadParams(num_requests=2, sessions=2, turns=1, system_words=10), 5)
    many = generate("chat", WorkloadParams(num_requests=5, sessions=5, turns=1, system_words=10), 5)
    assert few == many[:2]


def test_chat_default_sessions_cover_num_requests() -> None:
    specs = generate("chat", WorkloadParams(num_requests=10, turns=4, system_words=5), 0)
    assert len(specs) == 10 and len({s.session_id for s in specs}) == 3


def test_zipf_weights() -> None:
    w = zipf_weights(4, 1.0)
    assert sum(w) == pytest.approx(1.0)
    assert w == pytest.approx([12 / 25, 6 / 25, 4 / 25, 3 / 25])
    assert zipf_weights(3, 0.0) == pytest.approx([1 / 3] * 3)


def test_docqa_draws_documents_by_popularity_and_puts_the_document_first() -> None:
    params = WorkloadParams(num_requests=400, num_docs=5, doc_words=20, question_words=4, zipf_s=1.2)
    specs = generate("docqa", params, 2)
    counts = Counter(s.request_id.rsplit("-d", 1)[1] for s in specs)
    assert counts.most_common(1)[0][0] == "0"
    assert counts["0"] > 2 * counts["4"]
    same_doc = [s.as_prompt() for s in specs if s.request_id.endswith("-d0")][:2]
    doc_part = [p.split("\n\nQuestion:")[0] for p in same_doc]
    assert doc_part[0] == doc_part[1] and same_doc[0] != same_doc[1]
    uniform = generate("docqa", WorkloadParams(num_requests=400, num_docs=5, doc_words=5, zipf_s=0.0), 2)
    assert min(Counter(s.request_id.rsplit("-d", 1)[1] for s in uniform).values()) > 50


def test_unique_prompts_share_no_prefix() -> None:
    prompts = [s.as_prompt() for s in generate("unique", SMALL, 4)]
    assert len({p[:12] for p in prompts}) == len(prompts)
    assert all(s.session_id is None for s in generate("unique", SMALL, 4))


def test_mix_interleaves_components_and_keeps_chat_turn_order() -> None:
    specs = generate("mix", WorkloadParams(num_requests=60, system_words=5, doc_words=5, prompt_words=5), 9)
    kinds = Counter(s.request_id.split("-")[0] for s in specs)
    assert set(kinds) == {"chat", "docqa", "unique"}
    turns: dict[str, int] = {}
    for s in specs:
        if s.session_id is not None:
            assert s.turn == turns.get(s.session_id, -1) + 1
            turns[s.session_id] = s.turn
    with pytest.raises(ValueError):
        generate("mix", WorkloadParams(mix=(("trace", 1.0),)), 0)


def test_unknown_workload_and_bad_params() -> None:
    with pytest.raises(ValueError, match="unknown workload"):
        generate("nope", SMALL, 0)
    with pytest.raises(ValueError):
        WorkloadParams(num_requests=0)


def test_textgen_word_counts_and_vocabulary() -> None:
    gen = TextGen(random.Random(1))
    assert len(gen.words(37).split()) == 37 and gen.words(0) == ""
    assert len(set(vocabulary())) == len(vocabulary())


def test_spec_forms_convert_between_chat_and_completion() -> None:
    chat = RequestSpec("a", 4, messages=(Message("system", "S"), Message("user", "U")))
    assert chat.as_prompt() == "system: S\nuser: U\nassistant:"
    raw = RequestSpec("b", 4, prompt="P")
    assert raw.as_messages() == [{"role": "user", "content": "P"}]
    with pytest.raises(ValueError):
        RequestSpec("c", 4)
    with pytest.raises(ValueError):
        RequestSpec("d", 0, prompt="x")
