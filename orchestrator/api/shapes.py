"""The JSON shapes of OpenAI responses, chat and text completion, streamed and not.

``ResponseShape`` is a frozen description of one response (kind, id, model, creation time); its
methods build payload dicts for the chunk/final/usage objects. Usage always includes
``prompt_tokens_details.cached_tokens``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from orchestrator.api.logprobs import LogprobText, logprobs_payload


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


@dataclass(frozen=True)
class ResponseShape:
    kind: Literal["chat", "completion"]
    request_id: str
    model: str
    created: int

    @classmethod
    def chat(cls, model: str) -> ResponseShape:
        return cls("chat", f"chatcmpl-{uuid.uuid4().hex}", model, int(time.time()))

    @classmethod
    def completion(cls, model: str) -> ResponseShape:
        return cls("completion", f"cmpl-{uuid.uuid4().hex}", model, int(time.time()))

    @property
    def endpoint(self) -> str:
        return "chat_completions" if self.kind == "chat" else "completions"

    def _head(self, streamed: bool) -> dict[str, Any]:
        """The fields every response object opens with; ``streamed``: a chunk of an SSE stream."""
        obj = "text_completion" if self.kind != "chat" else "chat.completion.chunk" if streamed else "chat.completion"
        return {"id": self.request_id, "object": obj, "created": self.created, "model": self.model}

    def role_chunk(self) -> dict[str, Any] | None:
        """The chunk a stream opens with, sent just before the first text (as vLLM and OpenAI do): the
        assistant's role for chat; ``None`` for a text completion, whose stream opens with its text."""
        if self.kind != "chat":
            return None
        return {**self._head(True),
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}

    def _logprobs(self, entries: Sequence[LogprobText] | None) -> dict[str, Any] | None:
        return None if entries is None else logprobs_payload(self.kind, entries)

    def chunk(self, text: str, finish_reason: str | None,
              logprobs: Sequence[LogprobText] | None = None) -> dict[str, Any]:
        """A streamed chunk; ``logprobs`` (of its tokens) only when the request asked for them."""
        if self.kind == "chat":
            delta = {"content": text} if text else {}
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            if logprobs is not None:
                choice["logprobs"] = self._logprobs(logprobs)
            return {**self._head(True), "choices": [choice]}
        return {**self._head(True), "choices": [
            {"index": 0, "text": text, "logprobs": self._logprobs(logprobs), "finish_reason": finish_reason}]}

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int, cached: int) -> dict[str, Any]:
        return {**self._head(True), "choices": [], "usage": usage(prompt_tokens, completion_tokens, cached)}

    def final(self, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int,
              cached: int, token_ids: list[int] | None = None,
              logprobs: Sequence[LogprobText] | None = None) -> dict[str, Any]:
        answer = {"message": {"role": "assistant", "content": text}} if self.kind == "chat" else {"text": text}
        choice: dict[str, Any] = {"index": 0, **answer, "logprobs": self._logprobs(logprobs),
                                  "finish_reason": finish_reason}
        if token_ids is not None:
            choice["token_ids"] = token_ids
        return {**self._head(False), "choices": [choice], "usage": usage(prompt_tokens, completion_tokens, cached)}
