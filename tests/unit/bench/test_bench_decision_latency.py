"""The decision-latency benchmark on a tiny fleet: it times whole placements (remote and local) and writes
every raw sample next to its JSON result."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from bench.routing.decision_latency import main


def test_tiny_run_times_whole_placements_and_writes_raw_samples(tmp_path: Path) -> None:
    out = tmp_path / "decision_latency.json"
    main(["--workers", "4", "--decode-workers", "2", "--blocks", "3000", "--prompt-tokens", "512",
          "--iters", "5", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["samples_file"] == "decision_latency_samples.csv"
    assert result["argv"][-2:] == ["--out", str(out)]
    placements = result["placements"]
    assert placements["prefill_hit"].startswith("('disaggregated'")
    assert placements["decode_hit"].startswith("('short_prompt'")  # prefilled on the decode worker holding it
    with (tmp_path / "decision_latency_samples.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    series = {r["series"] for r in rows}
    assert series == set(result["percentiles"])
    assert {"placement_prefill_hit", "placement_miss", "placement_decode_hit_local", "part_match",
            "part_plan_remote", "part_prefill_pipeline", "part_decode_pipeline"} <= series
    assert len(rows) == 5 * len(series) and all(int(r["ns"]) > 0 for r in rows)
