"""``pdserve-bench`` against a plain vLLM OpenAI server (the tiny model on CPU): the client measures a
real streaming server end to end and writes every result file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main
from tests.e2e.servers import Server

pytestmark = pytest.mark.e2e

FILES = ("records.json", "records.csv", "summary.json", "summary.csv", "ttft_cdf.png", "tpot_cdf.png")


def test_bench_measures_a_plain_vllm_server(reference_server: Server, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    rc = main([
        "--target", f"vllm={reference_server.url}", "--model", "tiny-llama",
        "--workload", "unique", "--prompt-words", "24", "--num-requests", "8", "--max-tokens", "8",
        "--ignore-eos", "--concurrency", "2", "--seed", "1",
        "--timeout", "120", "--duration", "180", "--total-duration", "300",
        "--slo-ttft-ms", "60000", "--slo-tpot-ms", "60000",
        "--no-progress", "--out", str(out),
    ])
    printed = capsys.readouterr().out
    assert rc == 0, printed

    for name in FILES:
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, f"{name} missing"
    assert (out / "ttft_cdf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"] == {"vllm": "tiny-llama"}
    (run,) = summary["runs"]
    assert run["target"] == "vllm" and run["load_kind"] == "closed" and run["load_value"] == 2
    assert run["n"] == 8 and run["n_ok"] == 8 and run["n_err"] == 0, run["errors"]
    assert run["ttft"]["n"] == 8 and 0 < run["ttft"]["p50"] <= run["ttft"]["p99"] < 120
    assert run["tpot"]["n"] == 8 and 0 < run["tpot"]["p50"] <= run["tpot"]["p99"] < 120
    assert run["output_tokens"] == 8 * 8  # --ignore-eos: exactly max_tokens each, from usage
    assert run["prompt_tokens"] > 8 * 24  # usage came back with the stream
    assert run["slo_attainment"] == 1.0
    # A plain vLLM server sends no routing headers and no cached-token count unless asked to.
    assert run["prefill_workers"] == [] and run["decode_workers"] == []
    assert run["hit_rate"] is None

    records = json.loads((out / "records.json").read_text())
    assert len(records) == 8 and all(r["ok"] and r["status"] == 200 for r in records)
    assert all(r["output_tokens"] == 8 and r["ttft_s"] > 0 and r["tpot_s"] > 0 for r in records)
    assert len({r["request_id"] for r in records}) == 8
    assert (out / "records.csv").read_text().count("\n") == 9  # header + 8 rows
    assert "vllm" in printed and "TTFT" in printed
