"""The timing model: how long a batch step and a KV pull take. Pure arithmetic on a ``SimProfile``.

A step of a vLLM engine runs one forward pass over a mixed batch: new prompt tokens (prefill chunks)
and one token for each decoding sequence. The model charges

* a fixed per-step cost (weights read once per step, kernel launches, scheduling),
* per new prefill token (the dense GEMMs, compute bound: ~2 x parameters FLOPs per token),
* per (query, key) pair of the prefill chunk's causal attention (the quadratic term),
* per decoding sequence (sampling, per-request bookkeeping, its share of the GEMMs),
* per context token read by decode attention (KV bytes streamed from HBM, memory bound).

A KV pull takes ``link_latency_s + bytes / link_bandwidth_bytes_per_s``. Every duration is divided by
``speedup`` so a simulated fleet can run faster than real time.

Calibration (``configs/sim-profiles/llama-3.1-8b-h100.yaml``, where each figure is derived in a
comment; all approximate): Llama-3.1-8B has 32 layers, 8 KV heads of dim 128 (Meta's config.json), so
KV is 2 x 32 x 8 x 128 x 2 B = 131,072 B per token in BF16; an H100 SXM5 streams HBM3 at 3.35 TB/s and
does 989 dense BF16 TFLOPS (NVIDIA datasheet), so a decode step costs at least 16 GB / 3.35 TB/s =
4.8 ms, a prompt token ~2 x 8e9 FLOP (~3.2e-5 s at 50% utilisation), a context token's KV read ~4.9e-8 s.
NVIDIA's NIM benchmarks of Llama-3.1-8B on one H100 (ITL ~4.5 ms at concurrency 1, ~8 ms at 100)
bound these from below. A ConnectX-7 NIC moves 400 Gb/s; ~40 GB/s is assumed for RDMA reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.engines.sim.profile import SimProfile


@dataclass(frozen=True)
class StepShape:
    """What one step computes: the inputs of ``step_time``.

    ``prefill_attn_pairs``: sum over the new prefill tokens of the keys each attends to (its position
    + 1); see ``chunk_attn_pairs``. ``decode_context_tokens``: sum of decoding sequences' lengths.
    """

    prefill_tokens: int = 0
    prefill_attn_pairs: int = 0
    decode_seqs: int = 0
    decode_context_tokens: int = 0

    @property
    def empty(self) -> bool:
        return self.prefill_tokens == 0 and self.decode_seqs == 0


def chunk_attn_pairs(num_computed: int, num_new: int) -> int:
    """(query, key) pairs of a causal chunk of ``num_new`` tokens after ``num_computed`` cached ones:
    token ``i`` (0-based position ``num_computed + i``) attends to ``num_computed + i + 1`` keys."""
    return num_new * num_computed + num_new * (num_new + 1) // 2


def step_time(profile: SimProfile, shape: StepShape) -> float:
    """Seconds of wall clock one step takes (already divided by ``speedup``); 0 for an empty step."""
    if shape.empty:
        return 0.0
    seconds = (
        profile.step_base_s
        + profile.prefill_per_token_s * shape.prefill_tokens
        + profile.prefill_attn_per_pair_s * shape.prefill_attn_pairs
        + profile.decode_per_seq_s * shape.decode_seqs
        + profile.decode_per_ctx_token_s * shape.decode_context_tokens
    )
    return seconds / profile.speedup


def kv_bytes(profile: SimProfile, num_blocks: int) -> int:
    """Bytes of KV in ``num_blocks`` full blocks (all layers, K and V)."""
    return num_blocks * profile.block_size * profile.kv_bytes_per_token


def transfer_time(profile: SimProfile, num_bytes: int) -> float:
    """Seconds of wall clock to pull ``num_bytes`` over the link (already divided by ``speedup``)."""
    if num_bytes <= 0:
        return 0.0
    return (profile.link_latency_s + num_bytes / profile.link_bandwidth_bytes_per_s) / profile.speedup
