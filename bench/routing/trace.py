"""A deterministic multi-turn chat trace: sessions share one system prompt and grow their history turn
by turn (system + every earlier user turn and reply + the new user turn).

Turns come in waves: every session sends turn k near ``k * wave_period_s`` (jittered), or later if its
previous reply is not decoded yet (plus the user's think time). Sessions start staggered, so the first
arrivals can find the system prompt already cached on one worker.

Token ids are drawn from a seeded generator; nothing else varies between runs with the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TraceShape:
    sessions: int = 16
    turns: int = 8
    system_tokens: int = 1500  # ~6 KB of English text
    user_tokens: tuple[int, int] = (60, 250)
    reply_tokens: tuple[int, int] = (100, 300)
    start_window_s: float = 4.0  # turn 0 of each session arrives uniformly within this window
    wave_period_s: float = 6.0  # turn k > 0 is sent in wave k, at k * wave_period_s + jitter ...
    wave_jitter_s: float = 1.0
    think_s: tuple[float, float] = (0.2, 0.6)  # ... but never before the reply is decoded + think time


@dataclass(frozen=True)
class Turn:
    user: tuple[int, ...]
    reply: tuple[int, ...]
    think_s: float
    not_before_s: float  # the wave time (plus jitter) before which this turn is not sent


@dataclass(frozen=True)
class Session:
    session_id: str
    start_s: float
    turns: tuple[Turn, ...]

    def prompt(self, system: tuple[int, ...], turn: int) -> tuple[int, ...]:
        """The prompt of turn ``turn``: system prompt, the history so far, then the new user turn."""
        history: list[int] = list(system)
        for earlier in self.turns[:turn]:
            history += earlier.user + earlier.reply
        return tuple(history) + self.turns[turn].user


@dataclass(frozen=True)
class Trace:
    system: tuple[int, ...]
    sessions: tuple[Session, ...]


def make_trace(shape: TraceShape, seed: int) -> Trace:
    rng = np.random.default_rng(seed)

    def tokens(bounds: tuple[int, int]) -> tuple[int, ...]:
        return tuple(rng.integers(0, 150_000, int(rng.integers(bounds[0], bounds[1] + 1))).tolist())

    system = tuple(rng.integers(0, 150_000, shape.system_tokens).tolist())
    starts = sorted(float(x) for x in rng.uniform(0, shape.start_window_s, shape.sessions))

    def turn(i: int, k: int) -> Turn:
        wave = starts[i] if k == 0 else k * shape.wave_period_s + float(rng.uniform(0, shape.wave_jitter_s))
        return Turn(tokens(shape.user_tokens), tokens(shape.reply_tokens), float(rng.uniform(*shape.think_s)),
                    wave)

    sessions = tuple(Session(f"s{i:02d}", starts[i], tuple(turn(i, k) for k in range(shape.turns)))
                     for i in range(shape.sessions))
    return Trace(system, sessions)
