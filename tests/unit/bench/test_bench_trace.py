"""The JSONL trace schema and its replay (bench.workloads.trace)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.workloads import WorkloadParams, generate
from bench.workloads.trace import TraceError, read_trace

SAMPLE = Path(__file__).resolve().parents[3] / "bench" / "workloads" / "traces" / "sample.jsonl"


def write(tmp_path: Path, *lines: object) -> str:
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return str(path)


def test_committed_sample_trace_is_valid() -> None:
    specs = generate("trace", WorkloadParams(trace_path=str(SAMPLE), max_tokens=99), 0)
    assert len(specs) == 5
    assert [s.arrival_s for s in specs] == sorted(s.arrival_s or 0.0 for s in specs)
    assert specs[0].max_tokens == 24 and specs[3].max_tokens == 99


def test_sessions_become_ordered_turns_and_defaults_apply(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# a comment",
        {"session_id": "s", "messages": [{"role": "user", "content": "a"}]},
        "",
        {"prompt": "raw", "max_tokens": 3, "id": "raw-1"},
        {"session_id": "s", "messages": [{"role": "user", "content": "b"}]},
    )
    specs = generate("trace", WorkloadParams(trace_path=path, max_tokens=7), 0)
    assert [(s.request_id, s.session_id, s.turn, s.max_tokens) for s in specs] == [
        ("trace-2", "s", 0, 7),
        ("raw-1", None, 0, 3),
        ("trace-5", "s", 1, 7),
    ]
    assert all(s.arrival_s is None for s in specs)
    assert specs[1].prompt == "raw" and specs[0].messages is not None


def test_prompt_words_synthesises_seeded_text(tmp_path: Path) -> None:
    path = write(tmp_path, {"timestamp": 0, "prompt_words": 30})
    a = generate("trace", WorkloadParams(trace_path=path), 1)[0]
    b = generate("trace", WorkloadParams(trace_path=path), 1)[0]
    c = generate("trace", WorkloadParams(trace_path=path), 2)[0]
    assert a == b and a.prompt != c.prompt
    assert a.prompt is not None and len(a.prompt.split()) == 31  # tag + 30 words


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"prompt": "x", "colour": "red"}, "colour"),
        ({"prompt": "x", "messages": [{"role": "user", "content": "y"}]}, "exactly one of"),
        ({"max_tokens": 3}, "exactly one of"),
        ({"messages": [{"role": "robot", "content": "y"}]}, "messages.0.role"),
        ({"messages": []}, "messages"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt_words": 0}, "prompt_words"),
        ({"prompt": "x", "timestamp": -1}, "timestamp"),
        ("{not json", "not JSON"),
    ],
)
def test_schema_violations_name_the_line(tmp_path: Path, line: object, message: str) -> None:
    path = write(tmp_path, {"prompt": "fine"}, line)
    with pytest.raises(TraceError, match=message) as info:
        read_trace(path)
    assert "line 2" in str(info.value)


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, {"prompt": "x", "bad": 1}, {"nothing": 2}, {"prompt": "ok"})
    with pytest.raises(TraceError) as info:
        read_trace(path)
    assert "line 1" in str(info.value) and "line 2" in str(info.value)


def test_timestamps_all_or_none_and_never_backwards(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="every line or on none"):
        read_trace(write(tmp_path, {"prompt": "a", "timestamp": 0}, {"prompt": "b"}))
    with pytest.raises(TraceError, match="back in time"):
        read_trace(write(tmp_path, {"prompt": "a", "timestamp": 2}, {"prompt": "b", "timestamp": 1}))
    with pytest.raises(TraceError, match="no requests"):
        read_trace(write(tmp_path, "# only a comment"))


def test_trace_workload_needs_a_path() -> None:
    with pytest.raises(ValueError, match="trace file"):
        generate("trace", WorkloadParams(), 0)
