"""``pdserve-bench`` end to end: the real client against a fake streaming server on 127.0.0.1.

The server (``fake_openai_server``, a test fixture) emits tokens with known delays, so the measured
TTFT/TPOT must land near them, and every output file must be written.
"""

from __future__ import annotations

import csv
import json
import socket
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_openai_server import FakeTiming, serve_in_thread

from bench.cli import main

pytestmark = pytest.mark.timeout(60)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def slow_server() -> Iterator[str]:
    with serve_in_thread(FakeTiming(ttft_s=0.12, itl_s=0.03)) as url:
        yield url


def bench(out: Path, *args: str) -> int:
    return main([*args, "--out", str(out), "--no-progress", "--seed", "3"])


def load_records(out: Path) -> list[dict[str, Any]]:
    return json.loads((out / "records.json").read_text())


def test_single_target_measures_the_servers_delays_and_writes_files(
    slow_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = bench(
        tmp_path, "--target", f"fake={slow_server}/v1", "--workload", "chat", "--num-requests", "6",
        "--turns", "2", "--system-words", "40", "--user-words", "8", "--answer-words", "8",
        "--max-tokens", "8", "--concurrency", "2",
    )  # fmt: skip
    assert rc == 0
    records = load_records(tmp_path)
    assert len(records) == 6 and all(r["ok"] for r in records)
    for r in records:
        assert 0.12 <= r["ttft_s"] < 0.12 + 0.1
        assert 0.03 * 0.97 <= r["tpot_s"] < 0.03 + 0.02
        assert r["e2e_s"] == pytest.approx(0.12 + 7 * 0.03, abs=0.12)
        # One gap per chunk. A chunk delivered late makes the next gap short, so only their sum is
        # bounded by the server's 7 sleeps of 30 ms.
        assert len(r["itl_s"]) == 7 and all(gap > 0 for gap in r["itl_s"])
        assert sum(r["itl_s"]) >= 7 * 0.03 * 0.97
        assert r["output_tokens"] == 8 and r["cached_tokens"] == r["prompt_tokens"] // 2
        assert r["decode_worker"] == "decode-0" and r["route_reason"] == "prefix_match"
        assert r["prefill_worker"] in {"prefill-0", "prefill-1"}
    # Turn 1 of a session is sent only after its turn 0 has finished.
    by_id = {r["request_id"]: r for r in records}
    for s in range(3):
        first, second = by_id[f"chat-s{s}-t0"], by_id[f"chat-s{s}-t1"]
        assert second["sent_s"] >= first["sent_s"] + first["e2e_s"]
        assert second["prompt_tokens"] > first["prompt_tokens"]

    summary = json.loads((tmp_path / "summary.json").read_text())
    run = summary["runs"][0]
    assert summary["models"] == {"fake": "fake-model"}
    assert run["n_ok"] == 6 and run["hit_rate"] == pytest.approx(0.5, abs=0.02)
    assert 0.12 <= run["ttft"]["p50"] < 0.2
    assert summary["config"]["targets"][0]["url"] == slow_server
    assert "--concurrency" in summary["config"]["argv"]
    with (tmp_path / "records.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {"ttft_s", "tpot_s", "itl_mean_s", "prefill_worker"} <= set(rows[0])
    with (tmp_path / "summary.csv").open() as f:
        assert float(next(csv.DictReader(f))["ttft_p50_s"]) == pytest.approx(run["ttft"]["p50"])
    for name in ("ttft_cdf.png", "tpot_cdf.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_MAGIC)
    assert not (tmp_path / "latency_vs_load.png").exists()  # one load point: nothing to plot against
    out = capsys.readouterr().out
    assert "TTFT p50" in out and "fake" in out and "decode-0: 6" in out


def test_two_targets_side_by_side_with_multi_token_chunks(
    slow_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve_in_thread(FakeTiming(ttft_s=0.04, itl_s=0.03, tokens_per_chunk=2)) as fast:
        rc = bench(
            tmp_path, "--target", f"slow={slow_server}", "--target", f"fast={fast}", "--api", "completions",
            "--workload", "unique", "--prompt-words", "20", "--num-requests", "4", "--max-tokens", "9",
            "--concurrency", "2", "--no-plots",
        )  # fmt: skip
    assert rc == 0
    records = load_records(tmp_path)
    fast_recs = [r for r in records if r["target"] == "fast"]
    slow_recs = [r for r in records if r["target"] == "slow"]
    assert len(fast_recs) == len(slow_recs) == 4
    # Same workload for both: identical prompt sizes per request id.
    assert {r["request_id"]: r["prompt_tokens"] for r in fast_recs} == {
        r["request_id"]: r["prompt_tokens"] for r in slow_recs
    }
    for r in fast_recs:
        # Lower bounds are the server's sleeps; upper bounds would only measure how busy the host is.
        assert r["ttft_s"] >= 0.04
        assert len(r["itl_s"]) == 4 and sum(r["itl_s"]) >= 4 * 0.06 * 0.97  # per chunk: ~2 x 30 ms each
        # TPOT is per token although chunks carry two: the 8 tokens after the first over the 4 gaps.
        assert r["tpot_s"] >= 0.03 * 0.97
        assert r["tpot_s"] == pytest.approx(sum(r["itl_s"]) / 8, rel=0.02)
    out = capsys.readouterr().out
    assert "Ratios vs slow" in out
    ratios = out.split("Ratios vs slow", 1)[1].splitlines()
    ratio_line = next(line for line in ratios if line.startswith("fast"))
    ttft_ratio = float(ratio_line.split()[4].rstrip("x"))  # target, load, req/s, out tok/s, TTFT p50, ...
    # The ratio of the two targets' measured medians (not a fixed range: a busy host slows either server).
    measured = statistics.median(r["ttft_s"] for r in fast_recs) / statistics.median(r["ttft_s"] for r in slow_recs)
    assert ttft_ratio == pytest.approx(measured, abs=0.006)


def test_poisson_sweep_reports_slo_goodput(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # One prefill slot: at 400 req/s the 8 requests queue and TTFT passes the 200 ms SLO; at 8 req/s they do not.
    with serve_in_thread(FakeTiming(ttft_s=0.03, itl_s=0.005, prefill_slots=1)) as url:
        rc = bench(
            tmp_path, "--target", f"pd={url}", "--workload", "unique", "--prompt-words", "10",
            "--num-requests", "8", "--max-tokens", "4", "--rate", "8,400",
            "--slo-ttft-ms", "200", "--slo-tpot-ms", "50",
        )  # fmt: skip
    assert rc == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    attain = {run["load_value"]: run["slo_attainment"] for run in summary["runs"]}
    assert attain[8.0] == 1.0 and attain[400.0] < 0.9
    assert summary["goodput"] == {"pd": 8.0}
    assert "DistServe" in summary["goodput_definition"]
    sent = sorted(r["sent_s"] for r in load_records(tmp_path) if r["load_value"] == 8.0)
    assert 0.3 < sent[-1] < 3.0  # open loop really spread 8 requests at ~8/s
    assert (tmp_path / "latency_vs_load.png").read_bytes().startswith(PNG_MAGIC)
    assert "pd: goodput (req/s) = 8" in capsys.readouterr().out


def test_trace_replay_keeps_timestamps_and_sessions(tmp_path: Path) -> None:
    trace = Path(__file__).resolve().parents[3] / "bench" / "workloads" / "traces" / "sample.jsonl"
    with serve_in_thread(FakeTiming(ttft_s=0.05, itl_s=0.005)) as url:
        rc = bench(
            tmp_path, "--target", f"fake={url}", "--workload", "trace", "--trace", str(trace),
            "--load", "trace", "--time-scale", "4", "--max-tokens", "4", "--no-plots",
        )  # fmt: skip
    assert rc == 0
    by_id = {r["request_id"]: r for r in load_records(tmp_path)}
    assert len(by_id) == 5 and all(r["ok"] for r in by_id.values())
    assert by_id["story"]["scheduled_s"] == pytest.approx(0.05)
    assert by_id["story"]["sent_s"] == pytest.approx(0.05, abs=0.04)
    assert by_id["greet-2"]["sent_s"] >= by_id["greet-1"]["sent_s"] + by_id["greet-1"]["e2e_s"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_failures_are_recorded_not_raised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    assert bench(tmp_path / "nomodel", "--target", f"dead={dead}", "--num-requests", "1") == 1
    assert "pass --model" in capsys.readouterr().err
    assert (
        bench(tmp_path / "dead", "--target", f"dead={dead}", "--model", "m", "--num-requests", "2", "--no-plots") == 1
    )
    assert all("ConnectError" in r["error"] for r in load_records(tmp_path / "dead"))
    with serve_in_thread(FakeTiming(ttft_s=2.0)) as url:
        rc = bench(tmp_path / "slow", "--target", f"s={url}", "--num-requests", "2", "--timeout", "0.3", "--no-plots")
    assert rc == 1
    records = load_records(tmp_path / "slow")
    assert [r["error"] for r in records] == ["timeout after 0.3s"] * 2
    assert "timeout after 0.3s" in capsys.readouterr().out  # errors table
