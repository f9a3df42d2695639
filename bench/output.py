"""Result files: per-request records and run summaries as JSON and CSV.

Files written into the output folder:
* ``records.json`` / ``records.csv``: one row per request, with its run (target, load point, repeat),
  the raw measurements and the derived latencies (seconds); the JSON keeps the full inter-token
  latency list, the CSV its count, mean and max.
* ``summary.json``: the configuration (API key redacted), the model of each target, one summary per
  (target, load point), and the sweep goodput per target when SLOs were given.
* ``summary.csv``: the summaries flattened, one row per (target, load point).
Non-finite floats (an ``inf`` rate) are written as strings so the JSON stays standard.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from bench import metrics
from bench.config import BenchConfig
from bench.metrics import RunSummary, Stats
from bench.record import RequestRecord, RunResult


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return x


def record_row(result: RunResult, rec: RequestRecord, full: bool) -> dict[str, Any]:
    """One request as a flat dict; ``full`` keeps list-valued fields (JSON), otherwise aggregates them."""
    gaps = metrics.itls(rec)
    row: dict[str, Any] = {
        "target": result.key.target,
        "load_kind": result.key.load.kind,
        "load_value": result.key.load.value,
        "repeat": result.key.repeat,
        "ok": rec.ok,
        "ttft_s": metrics.ttft(rec),
        "tpot_s": metrics.tpot(rec),
        "output_tokens_counted": metrics.output_tokens(rec),
    }
    row.update({f.name: getattr(rec, f.name) for f in fields(rec) if f.name != "chunk_times_s"})
    if full:
        row["chunk_times_s"] = list(rec.chunk_times_s)
        row["itl_s"] = list(gaps)
    else:
        row["chunks"] = len(rec.chunk_times_s)
        row["itl_mean_s"] = sum(gaps) / len(gaps) if gaps else None
        row["itl_max_s"] = max(gaps) if gaps else None
    return row


def summary_row(s: RunSummary) -> dict[str, Any]:
    """A summary flattened for CSV: ``ttft_p50_s``...; counts as ``name:count;...``."""
    row: dict[str, Any] = {}
    for f in fields(s):
        value = getattr(s, f.name)
        if isinstance(value, Stats):
            row[f"{f.name}_n"] = value.n
            row.update({f"{f.name}_{k}_s": getattr(value, k) for k in ("mean", "p50", "p90", "p99")})
        elif isinstance(value, tuple):
            row[f.name] = ";".join(f"{k}:{v}" for k, v in value)
        else:
            row[f.name] = value
    row["n_err"] = s.n_err
    return row


def config_dict(config: BenchConfig) -> dict[str, Any]:
    redacted = tuple(replace(t, api_key="***" if t.api_key else None) for t in config.targets)
    return asdict(replace(config, targets=redacted))


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    columns = dict.fromkeys(key for r in rows for key in r)  # every key, in order of first appearance
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(_jsonable(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def write_all(
    out_dir: str | Path,
    config: BenchConfig,
    results: Sequence[RunResult],
    summaries: Sequence[RunSummary],
    goodput: Mapping[str, float | None] | None,
    models: Mapping[str, str],
    skipped_runs: int = 0,
) -> list[Path]:
    """Write the four files; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / n for n in ("records.json", "records.csv", "summary.json", "summary.csv")]
    write_json(paths[0], [record_row(r, rec, full=True) for r in results for rec in r.records])
    write_csv(paths[1], [record_row(r, rec, full=False) for r in results for rec in r.records])
    write_json(
        paths[2],
        {
            "config": config_dict(config),
            "models": dict(models),
            "runs": [asdict(s) | {"n_err": s.n_err} for s in summaries],
            "goodput": None if goodput is None else dict(goodput),
            "goodput_definition": "highest tested load whose SLO attainment >= "
            f"{config.goodput_attainment} (DistServe, Zhong et al., OSDI 2024)",
            "skipped_runs": skipped_runs,
        },
    )
    write_csv(paths[3], [summary_row(s) for s in summaries])
    return paths
