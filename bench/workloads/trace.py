"""Trace replay: requests read from a JSONL file, one JSON object per line.

Schema of one line (unknown keys are an error; blank lines and lines starting with ``#`` are skipped):

=================  ========================  ==========================================================
key                type                      meaning
=================  ========================  ==========================================================
``id``             string, optional          request id (default ``trace-<line number>``)
``timestamp``      number >= 0, optional     arrival, seconds after the start of the run; either every
                                             line has one or none has; non-decreasing in file order
``session_id``     string, optional          lines with the same session are turns of one conversation,
                                             in file order; a turn waits for the previous one to finish
``messages``       list of {role, content}   chat messages (role: system, user or assistant)
``prompt``         string                    raw prompt text
``prompt_words``   integer >= 1              synthesise a unique prompt of that many seeded words
``max_tokens``     integer >= 1, optional    default: ``--max-tokens``
=================  ========================  ==========================================================

Exactly one of ``messages``, ``prompt``, ``prompt_words`` per line. With timestamps, ``--load trace``
replays them (optionally scaled); without, any load shape applies. Example::

    {"timestamp": 0.0, "session_id": "a", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16}
    {"timestamp": 0.5, "prompt": "Once upon a time", "max_tokens": 32}
    {"timestamp": 0.7, "prompt_words": 300}
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bench.spec import Message, RequestSpec
from bench.textgen import TextGen
from bench.workloads import WorkloadParams, register


class TraceMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    role: Literal["system", "user", "assistant"]
    content: str


class TraceEntry(BaseModel):
    """One line of a trace file (see the module docstring for the schema)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str | None = None
    timestamp: float | None = Field(default=None, ge=0)
    session_id: str | None = None
    messages: list[TraceMessage] | None = Field(default=None, min_length=1)
    prompt: str | None = None
    prompt_words: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_body(self) -> TraceEntry:
        given = [k for k in ("messages", "prompt", "prompt_words") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one of messages, prompt, prompt_words is required (got {given or 'none'})")
        return self


class TraceError(ValueError):
    """A trace file that does not follow the schema; the message names every bad line."""


def read_trace(path: str | Path) -> list[tuple[int, TraceEntry]]:
    """Parse and validate ``path``; returns ``(line number, entry)`` pairs. Raises ``TraceError``."""
    entries: list[tuple[int, TraceEntry]] = []
    errors: list[str] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                entries.append((lineno, TraceEntry.model_validate(json.loads(text))))
            except json.JSONDecodeError as e:
                errors.append(f"line {lineno}: not JSON: {e.msg}")
            except ValidationError as e:
                for err in e.errors():
                    where = ".".join(str(p) for p in err["loc"]) or "(line)"
                    errors.append(f"line {lineno}: {where}: {err['msg']}")
    errors.extend(_check_timestamps(entries))
    if not entries and not errors:
        errors.append("no requests in file")
    if errors:
        raise TraceError(f"{path}: " + "; ".join(errors))
    return entries


def _check_timestamps(entries: list[tuple[int, TraceEntry]]) -> list[str]:
    with_ts = [e.timestamp is not None for _, e in entries]
    if any(with_ts) and not all(with_ts):
        return ["timestamp must be given on every line or on none"]
    errors: list[str] = []
    last = 0.0
    for lineno, e in entries:
        if e.timestamp is not None:
            if e.timestamp < last:
                errors.append(f"line {lineno}: timestamp {e.timestamp} goes back in time (previous {last})")
            last = max(last, e.timestamp)
    return errors


def to_spec(lineno: int, entry: TraceEntry, turn: int, default_max_tokens: int, seed: int) -> RequestSpec:
    """Convert one validated entry; ``prompt_words`` text is seeded by ``(seed, line number)``."""
    messages = None
    prompt = entry.prompt
    if entry.messages is not None:
        messages = tuple(Message(m.role, m.content) for m in entry.messages)
    elif entry.prompt_words is not None:
        gen = TextGen(random.Random(f"{seed}:trace:{lineno}"))
        prompt = f"[{gen.tag()}] {gen.words(entry.prompt_words)}"
    return RequestSpec(
        request_id=entry.id or f"trace-{lineno}",
        max_tokens=entry.max_tokens or default_max_tokens,
        messages=messages,
        prompt=prompt,
        session_id=entry.session_id,
        turn=turn,
        arrival_s=entry.timestamp,
    )


@register("trace")
def trace(params: WorkloadParams, seed: int) -> Iterator[RequestSpec]:
    if params.trace_path is None:
        raise ValueError("the trace workload needs a trace file (--trace PATH)")
    turns: dict[str, int] = {}
    for lineno, entry in read_trace(params.trace_path):
        turn = 0
        if entry.session_id is not None:
            turn = turns.get(entry.session_id, -1) + 1
            turns[entry.session_id] = turn
        yield to_spec(lineno, entry, turn, params.max_tokens, seed)
