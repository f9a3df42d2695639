"""Text at the sim HTTP face's edge (``openai_face``): chat template, tokenization and incremental
detokenization with the model's own tokenizer (transformers, loaded from a local folder), as vLLM's
OpenAI server does them. The engine itself only ever sees token ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class Tokenizer:
    """A model folder's tokenizer. ``vocab_size`` counts added tokens (ids are in ``[0, vocab_size)``)."""

    def __init__(self, path: str) -> None:
        from transformers import AutoTokenizer

        self._tok: Any = AutoTokenizer.from_pretrained(path)
        self.eos_token_id: int | None = self._tok.eos_token_id
        self.vocab_size: int = len(self._tok)

    def encode(self, text: str, *, add_special_tokens: bool) -> list[int]:
        return [int(t) for t in self._tok.encode(text, add_special_tokens=add_special_tokens)]

    def chat_prompt(self, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> list[int]:
        """The chat template rendered to text, then tokenized without added special tokens (vLLM's way:
        the template writes them)."""
        text = self._tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        return self.encode(str(text), add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=True))


@dataclass
class Detokenizer:
    """One request's output text, token by token. ``push`` returns the text the new ids complete; an
    unfinished multi-byte character waits for the next ids. Decodes only a short window before the new
    ids (vLLM's prefix/read offsets), so an answer costs O(n). With no tokenizer the text stays empty."""

    tokenizer: Tokenizer | None
    ids: list[int] = field(default_factory=list)
    _prefix: int = 0  # ids[_prefix:_read] are decoded again as context for the next ids
    _read: int = 0

    def push(self, new_ids: tuple[int, ...]) -> str:
        self.ids.extend(new_ids)
        tok = self.tokenizer
        if tok is None or self._read == len(self.ids):
            return ""
        context = tok.decode(self.ids[self._prefix:self._read])
        window = tok.decode(self.ids[self._prefix:])
        if len(window) <= len(context) or window.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        return window[len(context):]
