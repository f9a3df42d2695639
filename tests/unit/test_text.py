"""Tokenizer and IncrementalText with the real tiny tokenizer (SmolLM2's): incremental detokenization,
stop strings spanning tokens, held-back tails, multi-byte characters, flush."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.api.text import IncrementalText, Tokenizer


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer(str(tiny_model_dir))


def stream(tok: Tokenizer, text: str, stops: list[str], step: int = 1) -> tuple[list[str], str, bool]:
    """Push ``text``'s tokens ``step`` at a time; returns (deltas, flushed tail, stopped)."""
    ids = tok.encode(text)
    inc = IncrementalText(tok, stops)
    deltas: list[str] = []
    for i in range(0, len(ids), step):
        delta, stopped = inc.push(tuple(ids[i:i + step]))
        deltas.append(delta)
        if stopped:
            assert inc.push(tuple(ids[i + step:])) == ("", True)  # nothing after a stop
            return deltas, inc.flush(), True
    return deltas, inc.flush(), False


def test_tokenizer_encode_decode_and_chat_template(tok: Tokenizer) -> None:
    ids = tok.encode("Hello world")
    assert ids and all(isinstance(i, int) for i in ids)
    assert tok.decode(ids) == "Hello world"
    prompt = tok.chat_prompt([{"role": "user", "content": "Hello world"}])
    assert all(isinstance(i, int) for i in prompt)
    assert len(prompt) > len(ids)
    assert "Hello world" in tok.decode(prompt)
    assert tok.eos_token_id is not None


@pytest.mark.parametrize("text", [
    "Hello world, this is a plain sentence.",
    "héllo wörld 日本語 🎉 done",
    "  leading spaces\n\nand blank lines\t tabs",
    "",
])
@pytest.mark.parametrize("step", [1, 2, 5])
def test_no_stop_emits_the_exact_text_once(tok: Tokenizer, text: str, step: int) -> None:
    deltas, tail, stopped = stream(tok, text, [], step)
    assert not stopped
    assert "".join(deltas) + tail == text
    assert "\ufffd" not in "".join(deltas)  # never half a multi-byte character


def test_multi_byte_character_split_over_tokens_waits_for_its_last_byte(tok: Tokenizer) -> None:
    ids = tok.encode("🎉")
    assert len(ids) > 1, "the emoji must span several byte tokens for this test to mean something"
    inc = IncrementalText(tok)
    deltas = [inc.push((i,))[0] for i in ids]
    assert deltas[:-1] == [""] * (len(ids) - 1)
    assert deltas[-1] == "🎉"


@pytest.mark.parametrize(("text", "stops", "expected"), [
    ("Hello world, this is the END of it.", ["END"], "Hello world, this is the "),
    ("Hello world, this is the END of it.", ["the E"], "Hello world, this is "),  # spans two tokens
    ("Hello world, this is the END of it.", ["s is th"], "Hello world, thi"),  # starts mid-token
    ("STOP right now", ["STOP"], ""),  # at the very start
    ("Hello there x", ["x"], "Hello there "),  # the last token
    ("a\n\nb", ["\n\n"], "a"),
    ("one two three", ["three", "two"], "one "),  # the earliest of several
    ("one two three", ["two", "one t"], ""),  # the earliest, whatever the list order
    ("one two three", ["one t", "two"], ""),
])
@pytest.mark.parametrize("step", [1, 3])
def test_stop_strings(tok: Tokenizer, text: str, stops: list[str], expected: str, step: int) -> None:
    deltas, tail, stopped = stream(tok, text, stops, step)
    assert stopped
    assert tail == ""
    assert "".join(deltas) == expected


def test_a_possible_stop_prefix_is_held_back_then_released(tok: Tokenizer) -> None:
    inc = IncrementalText(tok, ["xyz"])
    seen = ""
    for i in tok.encode("Hello there xy"):
        delta, stopped = inc.push((i,))
        assert not stopped
        seen += delta
    assert seen == "Hello there "  # "xy" could still become "xyz"
    assert inc.flush() == "xy"
    assert inc.flush() == ""


def test_held_back_tail_is_released_when_the_text_moves_on(tok: Tokenizer) -> None:
    inc = IncrementalText(tok, ["END"])
    out = ""
    for i in tok.encode("The EN is not the end"):
        delta, stopped = inc.push((i,))
        assert not stopped
        out += delta
    assert out + inc.flush() == "The EN is not the end"


def test_stop_found_in_text_emitted_by_one_push(tok: Tokenizer) -> None:
    inc = IncrementalText(tok, ["world"])
    delta, stopped = inc.push(tuple(tok.encode("Hello world again")))
    assert (delta, stopped) == ("Hello ", True)
    assert inc.ids == tok.encode("Hello world again")


def test_flush_after_nothing(tok: Tokenizer) -> None:
    assert IncrementalText(tok, ["x"]).flush() == ""


def test_vocab_size_bounds_the_token_ids(tok: Tokenizer) -> None:
    assert tok.vocab_size > max(tok.encode("héllo wörld 日本語 🎉"))
    assert isinstance(tok.decode([tok.vocab_size - 1]), str)


@pytest.mark.parametrize("seed", range(6))
def test_windowed_decoding_equals_a_full_decode_of_random_ids(tok: Tokenizer, seed: int) -> None:
    """Random ids (byte fragments, specials, words) pushed in random chunk sizes decode to exactly
    what one full decode gives: the window never loses or repeats text."""
    import random

    rng = random.Random(seed)
    ids = [rng.randrange(tok.vocab_size) for _ in range(300)]
    inc = IncrementalText(tok)
    out, i = [], 0
    while i < len(ids):
        n = rng.randint(1, 5)
        delta, _ = inc.push(tuple(ids[i:i + n]))
        out.append(delta)
        i += n
    out.append(inc.flush())
    assert "".join(out) == tok.decode(ids)
