"""Mix: interleave other workloads by weight (``params.mix``), keeping each one's own order.

Each component runs with its own derived seed; at every step the next request comes from a component
drawn with probability proportional to its weight among those not yet exhausted. Request and session
ids are already prefixed by their workload name, so they stay unique in the mix.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from bench.spec import RequestSpec
from bench.workloads import WorkloadParams, register, stream


@register("mix")
def mix(params: WorkloadParams, seed: int) -> Iterator[RequestSpec]:
    parts = [(name, weight) for name, weight in params.mix if weight > 0]
    if not parts or any(name in ("mix", "trace") for name, _ in parts):
        raise ValueError("mix needs positive weights over synthetic workloads (not mix or trace)")
    streams = {name: stream(name, params, hash_seed(seed, name)) for name, _ in parts}
    weights = dict(parts)
    rng = random.Random(f"{seed}:mix")
    while weights:
        name = rng.choices(list(weights), weights=list(weights.values()))[0]
        spec = next(streams[name], None)
        if spec is None:
            del weights[name]
            continue
        yield spec


def hash_seed(seed: int, name: str) -> int:
    """A stable per-component seed (``hash()`` of a str is salted per process, so not that)."""
    return random.Random(f"{seed}:mix:{name}").getrandbits(31)
