"""Multi-turn chat: ``sessions`` conversations of ``turns`` turns behind one shared system prompt.

Turn k of a session sends ``[system, user_1, assistant_1, ..., user_k]``. The assistant replies in the
history are synthetic (``answer_words`` seeded words), not the server's real answers, so the requests
do not depend on what any server returned and every target gets byte-identical prompts. The cached
prefix a server can reuse is therefore the system prompt plus the history up to the previous user turn.

Order: round-robin by turn (turn 0 of every session, then turn 1, ...), so with enough sessions a
closed-loop worker rarely waits on a session's previous turn.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

from bench.spec import Message, RequestSpec
from bench.textgen import TextGen
from bench.workloads import WorkloadParams, register


@register("chat")
def chat(params: WorkloadParams, seed: int) -> Iterator[RequestSpec]:
    system = Message("system", TextGen(random.Random(f"{seed}:chat:system")).words(params.system_words))
    n_sessions = params.sessions or math.ceil(params.num_requests / params.turns)
    # One rng per session: a session's text does not depend on how many other sessions there are.
    gens = [TextGen(random.Random(f"{seed}:chat:session:{i}")) for i in range(n_sessions)]
    histories: list[list[Message]] = [[system] for _ in range(n_sessions)]
    for turn in range(params.turns):
        for i, (gen, history) in enumerate(zip(gens, histories, strict=True)):
            history.append(Message("user", gen.words(params.user_words)))
            yield RequestSpec(
                request_id=f"chat-s{i}-t{turn}",
                max_tokens=params.max_tokens,
                messages=tuple(history),
                session_id=f"chat-s{i}",
                turn=turn,
            )
            history.append(Message("assistant", gen.words(params.answer_words)))
