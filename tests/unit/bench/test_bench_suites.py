"""Pure parts of the suite drivers: the disaggregation suite's trace, the peer suite's balance figure,
the overhead report's per-repeat grouping, and the peer routers' command lines."""

from __future__ import annotations

from pathlib import Path

from bench.suites.disagg import make_trace, write_trace
from bench.suites.overhead_report import per_repeat
from bench.suites.peer_servers import ROUTERS, SimWorker, scrape
from bench.suites.peers_report import balance
from bench.workloads.trace import read_trace


def test_disagg_trace_is_seeded_sorted_and_bursts_only_when_asked(tmp_path: Path) -> None:
    quiet, bursty = make_trace(7, False), make_trace(7, True)
    assert make_trace(7, True) == bursty and make_trace(8, True) != bursty
    stream = [x for x in bursty if str(x["id"]).startswith("stream-")]
    assert stream == quiet  # the bursts are added to the same stream
    bursts = [x for x in bursty if str(x["id"]).startswith("burst-")]
    assert len(bursts) == 3 * 8 and {x["timestamp"] for x in bursts} == {0.25, 0.75, 1.25}
    times = [float(str(x["timestamp"])) for x in bursty]
    assert times == sorted(times) and max(times) < 1.5
    assert 45 < len(quiet) < 135  # Poisson(60/s) over 1.5 s
    count = write_trace(tmp_path / "t.jsonl", bursty, dilation=20.0)
    entries = read_trace(tmp_path / "t.jsonl")  # the benchmark client accepts it
    assert count == len(entries) == len(bursty)
    assert entries[-1][1].timestamp == round(times[-1] * 20.0, 4)


def test_balance_reads_worker_counters_or_routing_headers() -> None:
    peer = {"worker_requests": {"a": 10.0, "b": 5.0, "c": 20.0}}
    assert balance(peer, {"decode_workers": []}) == 4.0
    pdserve = {"worker_requests": {}}
    spread_all = {"decode_workers": [[f"w{i}", 8] for i in range(16)]}
    assert balance(pdserve, spread_all) == 1.0
    assert balance(pdserve, {"decode_workers": [["w0", 8], ["w1", 4]]}) == float("inf")  # 14 workers got none


def test_overhead_groups_by_concurrency_target_and_repeat() -> None:
    def rec(target: str, repeat: int, ttft: float, sent: float) -> dict[str, object]:
        return {"load_value": 16.0, "target": target, "repeat": repeat, "ok": True, "ttft_s": ttft,
                "e2e_s": ttft + 0.01, "sent_s": sent}

    stats = per_repeat([rec("direct", 0, 0.010, 0.0), rec("direct", 0, 0.020, 0.5),
                        rec("pdserve", 0, 0.030, 0.0), rec("direct", 1, 0.050, 0.0)])
    assert set(stats) == {(16.0, "direct", 0), (16.0, "pdserve", 0), (16.0, "direct", 1)}
    assert 10.0 <= stats[(16.0, "direct", 0)]["ttft_p50"] <= 20.0
    assert stats[(16.0, "direct", 0)]["req_per_s"] == 2 / 0.53


def test_router_command_lines_name_every_worker_and_kv_events() -> None:
    workers = [SimWorker("http://127.0.0.1:1000", "tcp://127.0.0.1:2000", "w0"),
               SimWorker("http://127.0.0.1:1001", "tcp://127.0.0.1:2001", "w1")]
    kv = ROUTERS["vllm-router"]("kv_aware", 9000, workers, "m", 16)
    assert kv[:1] == ["vllm-router"] and "--kv-event-source" in kv
    assert f"{workers[1].url}={workers[1].events}" in kv and kv[kv.index("--kv-event-block-size") + 1] == "16"
    sglang = ROUTERS["sglang-router"]("cache_aware", 9001, workers, "m", 16)
    assert sglang[:2] == ["sglang-router", "launch"] and all(w.url in sglang for w in workers)
    assert "--kv-event-source" not in ROUTERS["vllm-router"]("cache_aware", 9002, workers, "m", 16)
    assert all(s == "127.0.0.1" for cmd in (kv, sglang) for s in [cmd[cmd.index("--host") + 1]])


def test_scrape_of_a_dead_worker_is_empty() -> None:
    assert scrape("http://127.0.0.1:9") == {}  # nothing listens on the discard port
