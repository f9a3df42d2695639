"""Seeded pseudo-text: prompt text without downloads.

``TextGen(rng)`` draws words from a fixed vocabulary of pronounceable pseudo-words (built once, the
same in every process and Python version) using the caller's ``random.Random``. Same rng state ->
same text. Lengths are counted in words; with a typical BPE tokenizer one of these words is one to
three tokens, so sizes are approximate in tokens (the server's ``usage`` reports the exact count).
"""

from __future__ import annotations

import random
from functools import lru_cache

_ONSETS = ("b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "st", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_CODAS = ("", "", "n", "r", "s", "l", "m", "x")
VOCAB_SIZE = 4096


@lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    """The fixed vocabulary: ``VOCAB_SIZE`` distinct pseudo-words (deterministic, seed 0)."""
    rng = random.Random(0)
    words: dict[str, None] = {}  # insertion-ordered set
    while len(words) < VOCAB_SIZE:
        n_syllables = rng.choice((1, 2, 2, 3))
        syllables = (rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n_syllables))
        words.setdefault("".join(syllables))
    return tuple(words)


class TextGen:
    """Draws text from ``vocabulary()`` with the given rng (the caller owns the rng and its seed)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._vocab = vocabulary()

    def words(self, n: int) -> str:
        """``n`` words as sentences of 6-14 words, capitalised and ending in a full stop ('' for ``n <= 0``)."""
        out: list[str] = []
        remaining = n
        while remaining > 0:
            size = min(remaining, self._rng.randint(6, 14))
            sentence = [self._rng.choice(self._vocab) for _ in range(size)]
            sentence[0] = sentence[0].capitalize()
            out.append(" ".join(sentence) + ".")
            remaining -= size
        return " ".join(out)

    def tag(self) -> str:
        """A short random identifier (8 hex digits), used to make prompts unique from their first token."""
        return f"{self._rng.getrandbits(32):08x}"
