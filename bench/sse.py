"""Server-Sent Events as OpenAI streams them: ``data: {json}`` lines ending with ``data: [DONE]``.

Pure parsing, no I/O: the client feeds it the lines it reads and timestamps them itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class _Done:
    """The ``data: [DONE]`` sentinel."""

    def __repr__(self) -> str:
        return "DONE"


DONE = _Done()


def parse_line(line: str) -> dict[str, Any] | _Done | None:
    """One SSE line -> the JSON payload of a ``data:`` line, ``DONE``, or ``None`` (blank, comment,
    ``event:``/``id:``/``retry:`` fields). Raises ``ValueError`` on a ``data:`` line that is not JSON."""
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    if payload == "[DONE]":
        return DONE
    if not payload:
        return None
    obj = json.loads(payload)
    if not isinstance(obj, dict):
        raise ValueError(f"SSE data is not a JSON object: {payload[:80]!r}")
    return obj


@dataclass(frozen=True)
class Usage:
    """Token counts from the final ``usage`` chunk (``cached_tokens`` is ``None`` when not reported)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None


def usage_of(chunk: dict[str, Any]) -> Usage | None:
    """The usage carried by ``chunk`` (the last chunk with ``stream_options.include_usage``), if any."""
    usage = chunk.get("usage")
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached_tokens=None if cached is None else int(cached),
    )


def error_of(chunk: dict[str, Any]) -> str | None:
    """An in-stream error object's message (vLLM and others send ``{"error": {...}}`` mid-stream)."""
    err = chunk.get("error")
    if isinstance(err, dict):
        err = err.get("message") or err
    return None if err is None else str(err)
