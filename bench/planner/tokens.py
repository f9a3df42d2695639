"""A bench workload as token-level requests: what the planner's simulated fleet consumes.

``token_requests(specs, tokenizer, vocab_size)`` turns the ``RequestSpec`` list a bench workload made
(``bench.workloads.generate``, the same requests ``pdserve-bench`` sends for the same flags and seed)
into ``TokenRequest`` records. Contracts:

* deterministic: the same specs and tokenizer give the same token ids in any process;
* prefix-stable: a chat request whose messages extend another's gets a prompt that extends the other's
  prompt token for token (each message is encoded on its own and the pieces concatenated, the way a
  ChatML template lays them out), so prefix caching sees exactly the reuse a real chat template gives;
* every id is in ``[0, vocab_size)`` (the sim engine refuses others).

Two tokenizers: ``PseudoTokenizer`` (default; no model files) gives each whitespace-separated word
``round(len / 2.43)`` tokens (at least one), ids hashed from the word, which matches the 3.19 tokens per
bench pseudo-word that SmolLM2's tokenizer (the one ``configs/sim-64.yaml`` serves) was measured to give;
``HfTokenizer`` loads a local Hugging Face tokenizer folder for exact counts on real text.
"""

from __future__ import annotations

import itertools
import math
import random
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import xxhash

from bench.spec import RequestSpec
from bench.workloads import WorkloadParams, generate

CHARS_PER_TOKEN = 2.43  # SmolLM2's tokenizer on bench.textgen text, spaces included (measured)


@dataclass(frozen=True)
class TokenRequest:
    """One request in tokens. ``session``/``turn``: turns of one session run one after the other;
    ``offset_s``: the trace's own arrival time (None when the workload has none)."""

    request_id: str
    prompt: tuple[int, ...]
    max_tokens: int
    session: str | None = None
    turn: int = 0
    offset_s: float | None = None


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added)."""
        ...


class PseudoTokenizer:
    """Word-level stand-in for a BPE tokenizer (see the module docstring). Memoizes words."""

    def __init__(self) -> None:
        self._words: dict[str, tuple[int, ...]] = {}

    def _word(self, word: str) -> tuple[int, ...]:
        ids = self._words.get(word)
        if ids is None:
            n = max(1, round((len(word) + 1) / CHARS_PER_TOKEN))
            seed = xxhash.xxh3_64_intdigest(word.encode())
            ids = tuple(xxhash.xxh3_64_intdigest(array("Q", (seed, i)).tobytes()) & 0x7FFFFFFF for i in range(n))
            self._words[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        return [t for word in text.split() for t in self._word(word)]


class HfTokenizer:
    """A local Hugging Face tokenizer folder (``transformers`` is imported only when one is used)."""

    def __init__(self, path: str | Path) -> None:
        from transformers import AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(str(Path(path).expanduser()))

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))


def make_tokenizer(path: str | None) -> Tokenizer:
    """``HfTokenizer(path)`` when a folder is given, else the ``PseudoTokenizer``."""
    return HfTokenizer(path) if path else PseudoTokenizer()


class _Encoder:
    """Encodes messages once each (histories repeat them) and wraps them in role markers."""

    def __init__(self, tokenizer: Tokenizer, vocab_size: int) -> None:
        self.tok, self.vocab = tokenizer, vocab_size
        self._cache: dict[tuple[str, str], tuple[int, ...]] = {}

    def piece(self, role: str, text: str) -> tuple[int, ...]:
        key = (role, text)
        ids = self._cache.get(key)
        if ids is None:
            raw = [*self.tok.encode(f"<|{role}|>"), *self.tok.encode(text)] if role else self.tok.encode(text)
            ids = self._cache[key] = tuple(t % self.vocab for t in raw)
        return ids

    def prompt(self, spec: RequestSpec) -> tuple[int, ...]:
        if spec.messages is None:
            return self.piece("", spec.prompt or "")
        out: list[int] = []
        for m in spec.messages:
            out.extend(self.piece(m.role, m.content))
        out.extend(self.piece("assistant", ""))  # the generation prompt: where the answer starts
        return tuple(out)


def token_requests(specs: Sequence[RequestSpec], tokenizer: Tokenizer, vocab_size: int) -> list[TokenRequest]:
    """The specs in tokens, in the same order. ``ValueError`` for a spec whose prompt has no token."""
    enc = _Encoder(tokenizer, vocab_size)
    out = []
    for spec in specs:
        prompt = enc.prompt(spec)
        if not prompt:
            raise ValueError(f"{spec.request_id}: the prompt encodes to no token")
        out.append(TokenRequest(spec.request_id, prompt, spec.max_tokens, spec.session_id, spec.turn, spec.arrival_s))
    return out


def unit_arrivals(requests: Sequence[TokenRequest], seed: int) -> list[float]:
    """Arrival offsets at a mean rate of 1 request/s; divide by a rate to get that rate's arrivals.

    With the trace's own timestamps (every request has one): those, rescaled to a mean rate of 1, so the
    trace's burstiness is kept. Otherwise Poisson: exponential gaps from a generator seeded by ``seed``.
    Using one set of draws for every rate keeps the attainment-vs-rate curve free of per-rate noise, which
    the rate bisection relies on."""
    n = len(requests)
    offsets = [r.offset_s for r in requests]
    if n > 1 and all(o is not None for o in offsets):
        first, last = offsets[0] or 0.0, offsets[-1] or 0.0
        span = last - first
        if span > 0:
            return [((o or 0.0) - first) * (n - 1) / span for o in offsets]
    rng = random.Random(f"{seed}:planner:arrivals")
    gaps = (rng.expovariate(1.0) for _ in range(n - 1))
    return list(itertools.accumulate(gaps, initial=0.0))[:n]  # [:n]: no arrival for no request


class WorkloadSource:
    """The requests of one bench workload at any run length: ``get(n)`` generates the workload with
    ``num_requests = n`` (so a chat workload has n / turns sessions, as ``pdserve-bench --num-requests n``
    would send), tokenizes it and draws its unit-rate arrivals; results are memoized per ``n``. A trace
    has a fixed length: ``get`` returns at most its requests."""

    def __init__(self, name: str, params: WorkloadParams, seed: int, tokenizer: Tokenizer, vocab_size: int) -> None:
        self.name, self.params, self.seed = name, params, seed
        self.tokenizer, self.vocab_size = tokenizer, vocab_size
        self._memo: dict[int, tuple[tuple[TokenRequest, ...], tuple[float, ...]]] = {}

    def get(self, n: int) -> tuple[tuple[TokenRequest, ...], tuple[float, ...]]:
        """(requests, arrival offsets at 1 request/s) for a run of ``n`` requests."""
        if n not in self._memo:
            specs = generate(self.name, replace(self.params, num_requests=n), self.seed)
            reqs = token_requests(specs, self.tokenizer, self.vocab_size)
            self._memo[n] = (tuple(reqs), tuple(unit_arrivals(reqs, self.seed)))
        return self._memo[n]


def mean_prompt_tokens(requests: Sequence[TokenRequest]) -> float:
    return math.fsum(len(r.prompt) for r in requests) / max(1, len(requests))


def next_turns(requests: Sequence[TokenRequest]) -> dict[int, int]:
    """Request index -> index of the next request of the same session (in list order)."""
    last: dict[str, int] = {}
    out: dict[int, int] = {}
    for i, r in enumerate(requests):
        if r.session is not None:
            if r.session in last:
                out[last[r.session]] = i
            last[r.session] = i
    return out
