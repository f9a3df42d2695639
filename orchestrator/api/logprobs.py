"""Token logprobs as OpenAI shows them: the engine's (token id, logprob) records turned into text, and
the two response formats (chat's ``logprobs.content`` list, completions' parallel arrays).

``LogprobTexts`` is a mutable per-request accumulator: ``add`` a decode chunk's tokens and records,
``take`` what is pending for the next response chunk. Token text is each token decoded alone, special
tokens included; a completion's ``text_offset`` counts characters of those texts from the start of the
answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.api.text import Tokenizer
from protocol.types import TokenLogprob


@dataclass(frozen=True)
class LogprobText:
    """One generated token: its text, logprob, the most likely alternatives and where it starts."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...]
    offset: int


@dataclass
class LogprobTexts:
    tokenizer: Tokenizer
    pending: list[LogprobText] = field(default_factory=list)
    offset: int = 0

    def add(self, token_ids: Sequence[int], records: Sequence[TokenLogprob]) -> None:
        """Queue the records of ``token_ids`` (one each, in order); mutates ``pending``."""
        for token_id, record in zip(token_ids, records, strict=False):
            text = self.tokenizer.token_text(token_id)
            top = tuple((self.tokenizer.token_text(t), value) for t, value in record.top)
            self.pending.append(LogprobText(text, record.logprob, top, self.offset))
            self.offset += len(text)

    def take(self) -> tuple[LogprobText, ...]:
        """What is pending, emptied."""
        taken, self.pending = tuple(self.pending), []
        return taken


def _bytes(text: str) -> list[int]:
    return list(text.encode("utf-8", "surrogatepass"))


def logprobs_payload(kind: Literal["chat", "completion"], entries: Sequence[LogprobText]) -> dict[str, Any]:
    """The ``logprobs`` object of one choice (or one streamed chunk's choice)."""
    if kind == "chat":
        return {"content": [{"token": e.token, "logprob": e.logprob, "bytes": _bytes(e.token),
                             "top_logprobs": [{"token": t, "logprob": v, "bytes": _bytes(t)} for t, v in e.top]}
                            for e in entries]}
    return {"tokens": [e.token for e in entries], "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [dict(e.top) for e in entries], "text_offset": [e.offset for e in entries]}
