"""Argument handling (bench.config) and the text report (bench.report)."""

from __future__ import annotations

import math

import pytest

from bench import report
from bench.cli import main
from bench.config import build_parser, from_args
from bench.metrics import RunSummary, Stats


def config(*args: str):  # type: ignore[no-untyped-def]
    return from_args(build_parser().parse_args(["--target", "a=http://127.0.0.1:1", *args]))


def test_load_shape_is_inferred_from_the_swept_flag() -> None:
    assert [(p.kind, p.value) for p in config().points] == [("closed", 1.0)]
    assert [p.value for p in config("--concurrency", "1,4,16").points] == [1.0, 4.0, 16.0]
    rates = config("--rate", "0.5,2,inf").points
    assert [p.kind for p in rates] == ["poisson"] * 3 and math.isinf(rates[-1].value)
    assert config("--burst-size", "8", "--burst-period", "2").shape_options.burst_period_s == 2.0
    assert config("--load", "trace", "--workload", "trace", "--trace", "x.jsonl").points[0].kind == "trace"


def test_slo_and_sampling_options() -> None:
    c = config("--slo-ttft-ms", "200", "--slo-tpot-ms", "50", "--extra-body", '{"top_k": 5}', "--ignore-eos")
    assert (c.slo.ttft_s, c.slo.tpot_s) == (0.2, 0.05)
    assert c.sampling.extra_body == (("top_k", 5),) and c.sampling.ignore_eos


def test_every_bad_argument_is_reported_at_once() -> None:
    ns = build_parser().parse_args(
        ["--target", "ftp://x", "--rate", "2,1", "--num-requests", "0", "--timeout", "0", "--extra-body", "[1]"]
    )
    with pytest.raises(ValueError) as info:
        from_args(ns)
    text = str(info.value)
    for needle in ("http://", "--rate", "--num-requests", "--timeout", "--extra-body"):
        assert needle in text


def test_conflicting_sweeps_are_refused() -> None:
    with pytest.raises(ValueError, match="one swept flag"):
        config("--rate", "1", "--concurrency", "2")
    with pytest.raises(ValueError, match="does not use"):
        config("--load", "closed", "--rate", "1")
    with pytest.raises(ValueError, match=r"one swept flag, got --rate, --burst-size$"):
        config("--rate", "1", "--burst-size", "8")  # options as they are typed, not as argparse stores them


def test_main_returns_2_on_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--num-requests", "5"]) == 2
    assert "--target" in capsys.readouterr().err


def summary(target: str, load: float, ttft_p50: float, req_per_s: float, att: float | None = None) -> RunSummary:
    st = Stats(1, ttft_p50, ttft_p50, ttft_p50, ttft_p50)
    return RunSummary(
        target, "poisson", load, 10, 10, 5.0, req_per_s, 100.0, 200.0, st, Stats(0), Stats(0), st,
        100, 50, 20, 0.5, att, None, (("p0", 10),), (), (), (),
    )  # fmt: skip


def test_table_aligns_columns() -> None:
    lines = report.table(["name", "x"], [["a", "1"], ["long-name", "22"]]).splitlines()
    assert len({len(line) for line in lines}) == 1
    assert lines[2].startswith("a ") and lines[3].endswith("22")


def test_comparison_is_a_ratio_to_the_first_target_at_the_same_load() -> None:
    rows = [summary("base", 1, 0.100, 2.0), summary("new", 1, 0.050, 3.0), summary("new", 2, 0.01, 1.0)]
    text = report.comparison_table(rows)
    assert text is not None and "vs base" in text
    line = next(line for line in text.splitlines() if line.startswith("new"))
    assert "1.50x" in line and "0.50x" in line  # req/s up, TTFT down
    assert "poisson=2" not in text  # no base run at that load
    assert report.comparison_table(rows[:1]) is None
    assert report.ratio(1.0, 0.0) is None and report.ratio(None, 1.0) is None


def test_results_routing_and_goodput_text() -> None:
    rows = [summary("a", 1, 0.1, 2.0, att=0.95)]
    assert "95.0%" in report.results_table(rows) and "100.0" in report.results_table(rows)  # TTFT in ms
    assert "p0: 10" in (report.routing_table(rows) or "")
    text = report.goodput_lines({"a": 2.0, "b": None}, "poisson", 0.9)
    assert "a: goodput (req/s) = 2" in text and "b: goodput (req/s) = none" in text and "OSDI 2024" in text
