"""Suite idle_ttft: how a plain vLLM CPU engine's time to first token grows with the time it sat idle.

One plain vLLM server on one core (the ``vllm-1core`` target of ``cpu_vllm``), requests one at a time
through the official ``openai`` client, each sent after a pause taken in turn from ``--pauses`` (so
every pause sees the same drift of the host), unique ~200-token prompts, 24 tokens out, greedy. A
disaggregated prefill engine sits idle while its answers decode elsewhere; this measures what that
idleness alone costs a vLLM engine on this host, with no pdserve in the path.

    python -m bench.suites.idle_ttft --out bench/results/idle_ttft

Writes ``OUT/results.json`` (every request's pause and TTFT, the machine and the commit) and
``OUT/results.md`` (median and range per pause).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from bench.suites.common import log, machine, write_json
from bench.suites.cpu_vllm import MODEL_NAME, serve_one_core
from bench.suites.report_util import markdown_table

VOCAB = ("apple", "river", "stone", "light", "cloud", "music", "paper", "green", "window", "garden", "silver",
         "engine", "market", "story", "winter")


def measure(url: str, pauses: list[float], rounds: int, seed: int = 11) -> list[tuple[float, float]]:
    """``(pause s, TTFT ms)`` per request: ``rounds`` passes over ``pauses``, one request after each.
    Raises ``RuntimeError`` if an answer streams no text."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    rng = random.Random(seed)
    out: list[tuple[float, float]] = []
    for _ in range(rounds + 1):  # the first pass warms the server up and is dropped
        for pause in pauses:
            time.sleep(pause)
            prompt = " ".join(rng.choice(VOCAB) for _ in range(200)) + " Summarise."
            start = time.perf_counter()
            first = None
            for chunk in client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=24, temperature=0,
                                                   stream=True, extra_body={"ignore_eos": True}):
                if first is None and chunk.choices and chunk.choices[0].text:
                    first = time.perf_counter()
            if first is None:  # never record a whole answer's time as its TTFT
                raise RuntimeError(f"no text streamed back for a request after {pause} s idle")
            out.append((pause, (first - start) * 1000))
    return out[len(pauses):]


def table(samples: list[tuple[float, float]], pauses: list[float]) -> str:
    """Median TTFT and range per pause, as markdown. Pure."""
    rows = []
    for pause in pauses:
        values = [ttft for p, ttft in samples if p == pause]
        rows.append([f"{pause:g}", len(values), f"{statistics.median(values):,.0f}", f"{min(values):,.0f}",
                     f"{max(values):,.0f}"])
    return markdown_table(["idle before the request (s)", "requests", "TTFT p50 (ms)", "lowest", "highest"], rows,
                          "rrrrr") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.suites.idle_ttft", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pauses", default="0,0.5,1.5,3", help="seconds of idleness before each request")
    parser.add_argument("--rounds", type=int, default=5, help="passes over the pauses (after one warm-up pass)")
    args = parser.parse_args(argv)
    pauses = [float(p) for p in args.pauses.split(",")]
    info = machine()
    with serve_one_core() as server:
        log(f"plain vLLM at {server.url}; {args.rounds} rounds over pauses {pauses}")
        samples = measure(server.url, pauses, args.rounds)
    write_json(args.out / "results.json", {"machine": info, "pauses": pauses, "rounds": args.rounds,
                                           "samples": [{"pause_s": p, "ttft_ms": t} for p, t in samples]})
    text = table(samples, pauses)
    (args.out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
