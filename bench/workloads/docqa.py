"""Shared-document questions: single-turn questions about documents drawn from a pool by a Zipf law.

The pool holds ``num_docs`` documents of ``doc_words`` words. Request i picks document d with
probability proportional to ``1 / (d + 1) ** zipf_s`` (``zipf_s = 0`` is uniform), and asks a fresh
question after it: ``<document>\\n\\nQuestion: <question>``. The document comes first, so requests on the
same document share a long prefix; popular documents are reused most.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from bench.spec import Message, RequestSpec
from bench.textgen import TextGen
from bench.workloads import WorkloadParams, register


def zipf_weights(n: int, s: float) -> list[float]:
    """Normalised Zipf probabilities for ranks 1..n with exponent ``s``."""
    raw = [1.0 / (rank**s) for rank in range(1, n + 1)]
    total = sum(raw)
    return [w / total for w in raw]


@register("docqa")
def docqa(params: WorkloadParams, seed: int) -> Iterator[RequestSpec]:
    doc_gen = TextGen(random.Random(f"{seed}:docqa:docs"))
    docs = [f"Document {d} ({doc_gen.tag()}): {doc_gen.words(params.doc_words)}" for d in range(params.num_docs)]
    rng = random.Random(f"{seed}:docqa:requests")
    questions = TextGen(rng)
    weights = zipf_weights(params.num_docs, params.zipf_s)
    indices = range(params.num_docs)
    for i in range(params.num_requests):
        d = rng.choices(indices, weights=weights)[0]
        text = f"{docs[d]}\n\nQuestion: {questions.words(params.question_words)}"
        yield RequestSpec(
            request_id=f"docqa-{i}-d{d}",
            max_tokens=params.max_tokens,
            messages=(Message("user", text),),
        )
