"""Workload registry: named, seeded, pure generators of ``RequestSpec``.

Contract of a workload function ``fn(params, seed) -> Iterator[RequestSpec]``:
* deterministic: the same ``(params, seed)`` yields the same specs in the same order, in any process;
* pure: no I/O except ``trace``, which reads the file named in ``params.trace_path``;
* turns of one session appear in turn order (the runner relies on it to sequence them).

``generate`` truncates to ``params.num_requests`` and is what callers use.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bench.spec import RequestSpec


@dataclass(frozen=True)
class WorkloadParams:
    """Knobs for every workload (sizes in words; see ``bench.textgen``)."""

    num_requests: int = 100
    max_tokens: int = 128
    # chat: sessions x turns sharing one system prompt
    sessions: int | None = None  # None: ceil(num_requests / turns)
    turns: int = 4
    system_words: int = 512
    user_words: int = 64
    answer_words: int = 64  # synthetic assistant reply appended to the history after each turn
    # docqa: questions over a Zipf-distributed pool of long documents
    num_docs: int = 8
    doc_words: int = 2000
    question_words: int = 24
    zipf_s: float = 1.1
    # unique: single-turn prompts sharing no prefix
    prompt_words: int = 256
    # mix: (workload name, weight) pairs
    mix: tuple[tuple[str, float], ...] = (("chat", 0.4), ("docqa", 0.4), ("unique", 0.2))
    # trace: JSONL file (schema in bench/workloads/trace.py and README.md)
    trace_path: str | None = None

    def __post_init__(self) -> None:
        if self.num_requests < 1 or self.max_tokens < 1 or self.turns < 1 or self.num_docs < 1:
            raise ValueError("num_requests, max_tokens, turns and num_docs must be >= 1")
        if self.sessions is not None and self.sessions < 1:
            raise ValueError("sessions must be >= 1")
        if self.zipf_s < 0:
            raise ValueError("zipf_s must be >= 0")


WorkloadFn = Callable[[WorkloadParams, int], Iterator[RequestSpec]]
WORKLOADS: dict[str, WorkloadFn] = {}


def register(name: str) -> Callable[[WorkloadFn], WorkloadFn]:
    """Decorator: make ``fn`` available as workload ``name``."""

    def deco(fn: WorkloadFn) -> WorkloadFn:
        if name in WORKLOADS:
            raise ValueError(f"workload {name!r} registered twice")
        WORKLOADS[name] = fn
        return fn

    return deco


def stream(name: str, params: WorkloadParams, seed: int) -> Iterator[RequestSpec]:
    """The untruncated stream of workload ``name``."""
    try:
        fn = WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(sorted(WORKLOADS))}") from None
    return fn(params, seed)


def generate(name: str, params: WorkloadParams, seed: int) -> list[RequestSpec]:
    """The first ``params.num_requests`` specs of workload ``name`` with ``seed``."""
    return list(itertools.islice(stream(name, params, seed), params.num_requests))


# Registration side effects: each module registers its workload(s).
from bench.workloads import chat, docqa, mix, trace, unique  # noqa: E402

__all__ = ["WORKLOADS", "WorkloadParams", "chat", "docqa", "generate", "mix", "register", "stream", "trace", "unique"]
