"""Text at the edge: chat template and tokenization (once, with the model's own tokenizer), and
incremental detokenization with stop strings for streamed token ids.

``IncrementalText`` decodes a growing token list without re-emitting text and without splitting a
multi-byte character: it decodes a small window before the new tokens and emits only what is new and
complete. Stop strings are searched in the text produced so far; text from the stop string on is
never emitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class Tokenizer:
    """The model's tokenizer (transformers), loaded once from the model folder."""

    def __init__(self, path: str) -> None:
        from transformers import AutoTokenizer

        self._tok: Any = AutoTokenizer.from_pretrained(path)
        self.eos_token_id: int | None = self._tok.eos_token_id
        self.vocab_size: int = len(self._tok)  # token ids are in [0, vocab_size), added tokens included

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        ids = self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return [int(t) for t in ids]

    def encode(self, text: str) -> list[int]:
        return [int(t) for t in self._tok.encode(text, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=True))

    def token_text(self, token_id: int) -> str:
        """One token decoded alone, special tokens included (what logprobs name it)."""
        return str(self._tok.decode([token_id], skip_special_tokens=False))


@dataclass
class IncrementalText:
    """Mutable per-request detokenizer. ``push`` returns (new text, stopped)."""

    tokenizer: Tokenizer
    stops: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    emitted: str = ""
    _prefix: int = 0  # ids[_prefix:_read] are decoded again as context for the next tokens
    _read: int = 0  # ids before this index are already in _decoded
    _decoded: str = ""
    stopped: bool = False

    def _full_text(self) -> str:
        """Decode only a small window: the tokens since the last read plus the few before them as
        context (byte-level BPE and sentencepiece merge across token edges), so a whole answer costs
        O(n) decoding rather than O(n^2). An unfinished multi-byte character waits for more tokens."""
        context = self.tokenizer.decode(self.ids[self._prefix:self._read])
        window = self.tokenizer.decode(self.ids[self._prefix:])
        if len(window) > len(context) and not window.endswith("\ufffd") and window.startswith(context):
            self._decoded += window[len(context):]
            self._prefix, self._read = self._read, len(self.ids)
        elif not window.startswith(context):  # the tokenizer re-joined across the edge: decode it all
            self._decoded = self.tokenizer.decode(self.ids)
            if not self._decoded.endswith("\ufffd"):
                self._prefix = self._read = len(self.ids)
        return self._decoded

    def push(self, new_ids: tuple[int, ...]) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        self.ids.extend(new_ids)
        text = self._full_text()
        if text.endswith("\ufffd"):
            return "", False  # an incomplete multi-byte character: wait for the next token
        candidate = text
        hold = 0
        if self.stops:
            # The earliest match of any stop string wins, whatever their order in the list.
            found = [pos for stop in self.stops
                     if (pos := text.find(stop, max(0, len(self.emitted) - len(stop)))) != -1]
            if found:
                candidate = text[:min(found)]
                self.stopped = True
            if not self.stopped:
                # Hold back a tail that could be the start of a stop string.
                hold = max((k for s in self.stops for k in range(1, len(s)) if candidate.endswith(s[:k])),
                           default=0)
        return self._emit(candidate[: len(candidate) - hold]), self.stopped

    def flush(self) -> str:
        """At the end of the stream: release any held-back tail (no stop string completed)."""
        return "" if self.stopped else self._emit(self._full_text())

    def _emit(self, visible: str) -> str:
        """What of ``visible`` is new since the last emitted text; it is added to ``emitted``."""
        delta = visible[len(self.emitted):] if visible.startswith(self.emitted) else ""
        self.emitted += delta
        return delta
