"""Fit the step-time coefficients of ``llama-3.1-8b-h100`` to published vLLM measurements (BF16, one H100).

Run: ``.venv/bin/python -m bench.calibration.h100_llama8b``. Pure arithmetic, no network, well under a second.

Each observation is a published number (a TTFT, a run duration, an end-to-end latency) whose batch is
known exactly: every request of the run arrives at once, so vLLM prefills all prompts in one step and then
decodes one token per running sequence per step until the longest request ends. That gives the list of
``StepShape``s the number covers; their features summed (steps, prefill tokens, attention pairs, decoding
sequences, context tokens) times the coefficients is the model's prediction (``timing.step_time`` is linear).

The fit is non-negative least squares on relative error. A coefficient whose term, at the current profile's
value, explains less than ``IDENTIFIABLE_SHARE`` of every observation cannot be told apart from noise by this
data: it keeps the spec-derived value from the profile and is reported as such. See README.md for sources,
conversions and limitations.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from protocol.sim_profile import read_profile
from worker.engines.sim.profile import SimProfile
from worker.engines.sim.timing import StepShape, chunk_attn_pairs, step_time

PROFILE = "llama-3.1-8b-h100"
COEFFS = ("step_base_s", "prefill_per_token_s", "prefill_attn_per_pair_s", "decode_per_seq_s", "decode_per_ctx_token_s")
IDENTIFIABLE_SHARE = 0.02

LAMBDA_REPO = "https://github.com/LambdaLabsML/vllm-benchmark/blob"
LAMBDA_DIR = "results/prompt_10/1xH100-80GB-SXM"


@dataclass(frozen=True)
class Source:
    """Where a published figure comes from and under which conditions it was measured."""

    url: str
    engine: str
    conditions: str


@dataclass(frozen=True)
class Observation:
    """One published figure and the steps it spans: ``seconds`` is ``published`` converted to seconds."""

    name: str
    source: Source
    published: float
    unit: str
    steps: tuple[StepShape, ...]
    conversion: str

    @property
    def seconds(self) -> float:
        return self.published / 1000.0 if self.unit == "ms" else self.published

    def features(self) -> np.ndarray:
        """Summed step features, in the order of ``COEFFS``."""
        rows = [(1, s.prefill_tokens, s.prefill_attn_pairs, s.decode_seqs, s.decode_context_tokens) for s in self.steps]
        return np.asarray(rows, dtype=float).sum(axis=0)


def batch_run(inputs: list[int], outputs: list[int], decode: bool = True) -> tuple[StepShape, ...]:
    """Steps of a run where all requests arrive together: one prefill step with every prompt, then decode
    steps (a sequence of prompt ``n`` at decode step ``k`` reads ``n + k`` context tokens) until the longest
    request has produced its last token. ``decode=False`` keeps only the prefill step (a TTFT)."""
    steps = [StepShape(sum(inputs), sum(chunk_attn_pairs(0, n) for n in inputs))]
    for k in range(1, max(outputs) if decode else 1):
        live = [n for n, out in zip(inputs, outputs, strict=True) if out - 1 >= k]
        steps.append(StepShape(decode_seqs=len(live), decode_context_tokens=sum(n + k for n in live)))
    return tuple(steps)


VLLM_CI = Source(
    url="https://buildkite.com/elastic/enterprise-search-ruby/builds/571",
    engine="vLLM performance-benchmark CI (benchmark_latency; version not printed on the page)",
    conditions="latency_llama8B_tp1: Llama-3.1-8B, TP1 on one GPU of an 8xH100 node, default dtype (BF16), "
    "32 input tokens, 128 output tokens, fixed batch 8; the stored copy of vLLM's report is indexed under this URL",
)
LAMBDA_PROMPTS = [13, 25, 27, 10, 329, 29, 399, 328, 4, 205]  # input_lens printed in each Lambda file


def lambda_source(commit: str, max_len: int) -> Source:
    return Source(
        url=f"{LAMBDA_REPO}/{commit}/{LAMBDA_DIR}/Meta-Llama-3-8B-Instruct_tp1_len{max_len}.json",
        engine="vLLM OpenAI server + benchmark_serving.py (results dated 2024-09-07/08, vLLM 0.5/0.6 era)",
        conditions=f"Meta-Llama-3-8B-Instruct (same architecture as 3.1-8B), BF16, 1x H100 80GB SXM, "
        f"max-model-len {max_len}, 10 ShareGPT prompts sent at once (request rate inf)",
    )


def lambda_observations(
    commit: str, max_len: int, ttft_ms: float, duration_s: float, outs: list[int]
) -> list[Observation]:
    src = lambda_source(commit, max_len)
    return [
        Observation(
            f"lambda len{max_len} mean TTFT",
            src,
            ttft_ms,
            "ms",
            batch_run(LAMBDA_PROMPTS, outs, decode=False),
            "all 10 TTFTs are within 1 ms, so the 10 prompts (1369 tokens) were prefilled in one step; "
            "mean_ttft_ms = that step (it also carries the server's HTTP/tokenizer overhead)",
        ),
        Observation(
            f"lambda len{max_len} duration",
            src,
            duration_s,
            "s",
            batch_run(LAMBDA_PROMPTS, outs),
            f"duration = prefill step + {max(outs) - 1} decode steps until the 741-token request ends; "
            f"batch shrinks 10 -> 1 as the output_lens {outs} finish",
        ),
    ]


# The vLLM CI latency figure (VLLM_CI, batch 8, 32 in / 128 out, 997.542 ms) is kept for reference but
# not fitted: the only retrievable copy of that report sits under another project's URL, so its
# provenance (and vLLM version) cannot be checked. Without it decode_per_seq_s is not identifiable.
OBSERVATIONS: list[Observation] = [
    *lambda_observations(
        "a4f9f4371a1ccac781293837fce2bce0cc6d25cc",
        2048,
        62.426355000934564,
        5.3666093360079685,
        [120, 429, 233, 194, 101, 741, 9, 3, 6, 31],
    ),
    *lambda_observations(
        "bf5465745a4abd8899fff87a52e780449921425a",
        4096,
        62.87495340220631,
        5.407117916009156,
        [120, 393, 233, 194, 101, 741, 9, 3, 6, 31],
    ),
    *lambda_observations(
        "211b2ae88cb48cdacf0c4ed57a206ebcd676c02b",
        8192,
        62.27543429995421,
        5.4596093260042835,
        [120, 414, 233, 194, 101, 741, 9, 3, 6, 31],
    ),
]


@dataclass(frozen=True)
class Fit:
    coeffs: dict[str, float]
    fitted: tuple[str, ...]  # the rest kept the profile's value


def nnls_relative(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """min ||(a x - y) / y|| subject to x >= 0, by trying every support set (few columns only)."""
    w = a / y[:, None]
    scale = np.linalg.norm(w, axis=0)
    scale[scale == 0] = 1.0
    ws, target = w / scale, np.ones_like(y)
    best, best_err = np.zeros(a.shape[1]), float(np.sum(target**2))
    for size in range(1, a.shape[1] + 1):
        for cols in itertools.combinations(range(a.shape[1]), size):
            sol = np.linalg.lstsq(ws[:, cols], target, rcond=None)[0]
            if np.any(sol < 0):
                continue
            x = np.zeros(a.shape[1])
            x[list(cols)] = sol
            err = float(np.sum((ws @ x - target) ** 2))
            if err < best_err:
                best, best_err = x, err
    return best / scale


def fit(observations: list[Observation], prior: dict[str, float]) -> Fit:
    feats = np.stack([o.features() for o in observations])
    y = np.array([o.seconds for o in observations])
    shares = feats * np.array([prior[c] for c in COEFFS]) / y[:, None]
    free = tuple(c for j, c in enumerate(COEFFS) if shares[:, j].max() >= IDENTIFIABLE_SHARE)
    fixed = [j for j, c in enumerate(COEFFS) if c not in free]
    residual_y = y - feats[:, fixed] @ np.array([prior[COEFFS[j]] for j in fixed])
    cols = [COEFFS.index(c) for c in free]
    sol = nnls_relative(feats[:, cols], residual_y) if cols else np.zeros(0)
    coeffs = dict(prior)
    coeffs.update({c: float(v) for c, v in zip(free, sol, strict=True)})
    return Fit(coeffs, free)


def predict(profile: SimProfile, obs: Observation) -> float:
    return sum(step_time(profile, s) for s in obs.steps)


def main() -> None:
    base = SimProfile.model_validate(read_profile(PROFILE))
    prior = {c: float(getattr(base, c)) for c in COEFFS}
    result = fit(OBSERVATIONS, prior)
    fitted = base.model_copy(update=result.coeffs)

    print(f"Fit of {PROFILE} step-time coefficients to {len(OBSERVATIONS)} published observations")
    print(
        f"(non-negative least squares on relative error; identifiable = term >= {IDENTIFIABLE_SHARE:.0%} "
        "of some observation)\n"
    )
    print(f"{'coefficient':<26}{'profile (spec)':>16}{'fitted':>16}  status")
    for c in COEFFS:
        status = "fitted" if c in result.fitted else "kept spec value (not identifiable by this data)"
        print(f"{c:<26}{prior[c]:>16.4g}{result.coeffs[c]:>16.4g}  {status}")

    print(f"\n{'observation':<34}{'published':>12}{'fitted model':>14}{'rel err':>9}{'profile':>11}{'rel err':>9}")
    errs, errs_prior = [], []
    for o in OBSERVATIONS:
        got, old = predict(fitted, o), predict(base, o)
        err, err_old = (got - o.seconds) / o.seconds, (old - o.seconds) / o.seconds
        errs.append(abs(err))
        errs_prior.append(abs(err_old))
        print(f"{o.name:<34}{o.seconds:>11.4f}s{got:>13.4f}s{err:>+9.1%}{old:>10.4f}s{err_old:>+9.1%}")
    print(f"\nfitted model:  median |rel err| {np.median(errs):.1%}, max {max(errs):.1%}")
    print(f"profile today: median |rel err| {np.median(errs_prior):.1%}, max {max(errs_prior):.1%}")

    print("\nLeave one source out (how much each coefficient hangs on one source):")
    sources = list(dict.fromkeys(o.source for o in OBSERVATIONS))
    for i, src in enumerate(sources):
        alt = fit([o for o in OBSERVATIONS if o.source != src], prior)
        shown = ", ".join(f"{c}={alt.coeffs[c]:.3g}{'' if c in alt.fitted else ' (kept)'}" for c in result.fitted)
        print(f"  without source {i + 1}: {shown}")

    print("\nSources:")
    for i, src in enumerate(sources):
        print(f"{i + 1}. {src.url}\n   {src.engine}; {src.conditions}")


if __name__ == "__main__":
    main()
