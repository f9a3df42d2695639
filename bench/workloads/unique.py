"""Unique single-turn prompts: no two requests share a prefix (a random tag opens each prompt)."""

from __future__ import annotations

import random
from collections.abc import Iterator

from bench.spec import Message, RequestSpec
from bench.textgen import TextGen
from bench.workloads import WorkloadParams, register


@register("unique")
def unique(params: WorkloadParams, seed: int) -> Iterator[RequestSpec]:
    gen = TextGen(random.Random(f"{seed}:unique"))
    for i in range(params.num_requests):
        text = f"[{gen.tag()}-{i}] {gen.words(params.prompt_words)}"
        yield RequestSpec(request_id=f"unique-{i}", max_tokens=params.max_tokens, messages=(Message("user", text),))
