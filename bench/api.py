"""The two OpenAI endpoints the benchmark drives, as a registry of ``ApiKind`` values.

An ``ApiKind`` knows its path, how to turn a ``RequestSpec`` into a streaming request body, and where
the generated text sits in a stream chunk. Nothing here does I/O.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from bench.spec import RequestSpec


@dataclass(frozen=True)
class SamplingOptions:
    """Request-body options shared by every request of a run."""

    temperature: float = 0.0
    ignore_eos: bool = False  # vLLM extension: always generate max_tokens tokens
    extra_body: tuple[tuple[str, Any], ...] = field(default_factory=tuple)


class ApiKind(ABC):
    """One endpoint. ``body`` must request streaming with usage in the final chunk."""

    name: str
    path: str

    def body(self, spec: RequestSpec, model: str, options: SamplingOptions) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": spec.max_tokens,
            "temperature": options.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if options.ignore_eos:
            body["ignore_eos"] = True
        body.update(self.payload(spec))
        body.update(dict(options.extra_body))
        return body

    @abstractmethod
    def payload(self, spec: RequestSpec) -> dict[str, Any]:
        """The endpoint-specific part of the body (``messages`` or ``prompt``)."""

    @abstractmethod
    def text_of(self, chunk: dict[str, Any]) -> str:
        """Generated text in ``chunk`` ('' for role-only, usage-only or empty chunks)."""


class ChatApi(ApiKind):
    name = "chat"
    path = "/v1/chat/completions"

    def payload(self, spec: RequestSpec) -> dict[str, Any]:
        return {"messages": spec.as_messages()}

    def text_of(self, chunk: dict[str, Any]) -> str:
        choices = chunk.get("choices") or []
        if not choices:
            return ""
        delta = choices[0].get("delta") or {}
        # Reasoning models stream thinking in a separate field; it is still generated output.
        return str(delta.get("content") or "") + str(delta.get("reasoning_content") or "")


class CompletionsApi(ApiKind):
    name = "completions"
    path = "/v1/completions"

    def payload(self, spec: RequestSpec) -> dict[str, Any]:
        return {"prompt": spec.as_prompt()}

    def text_of(self, chunk: dict[str, Any]) -> str:
        choices = chunk.get("choices") or []
        return str(choices[0].get("text") or "") if choices else ""


API_KINDS: dict[str, ApiKind] = {api.name: api for api in (ChatApi(), CompletionsApi())}


def api_kind(name: str) -> ApiKind:
    try:
        return API_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown api {name!r}; known: {', '.join(API_KINDS)}") from None
