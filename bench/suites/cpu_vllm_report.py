"""The cpu_vllm suite's report: latencies per target and workload, ratios to plain vLLM on one core, and
where the time went (pdserve's stages per request; the threads that used the cores). Reads only what
the suite wrote under OUT; writes ``OUT/results.md`` and ``OUT/results.json``.

    python -m bench.suites.cpu_vllm --out bench/results/cpu_vllm --report-only
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.suites.report_util import markdown_table, ms

BASELINE = "vllm-1core"


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def latency_rows(index: dict[str, Any], summaries: dict[str, Any]) -> list[list[str]]:
    rows = []
    for r in index["runs"]:
        s = summaries[r["dir"]]
        prompt = s["prompt_tokens"] / max(1, s["n_ok"])
        rows.append([r["target"], r["workload"], f"{s['n_ok']}/{s['n']}", f"{prompt:.0f}",
                     ms(s["ttft"]["p50"]), ms(s["ttft"]["p90"]), ms(s["tpot"]["p50"], digits=1),
                     ms(s["tpot"]["p90"], digits=1), ms(s["itl"]["p50"], digits=1)])
    return rows


def ratio_rows(index: dict[str, Any], summaries: dict[str, Any]) -> list[list[str]]:
    """Each other target's TTFT and TPOT medians over the baseline's, per workload."""
    rows = []
    for r in index["runs"]:
        run, base = summaries[r["dir"]], summaries.get(f"{BASELINE}-{r['workload']}")
        if r["target"] == BASELINE or not base or not base["ttft"]["p50"] or not run["ttft"]["p50"]:
            continue
        rows.append([r["target"], r["workload"], f"{run['ttft']['p50'] / base['ttft']['p50']:.2f}",
                     f"{run['tpot']['p50'] / base['tpot']['p50']:.2f}"])
    return rows


def stage_rows(out: Path, index: dict[str, Any], summaries: dict[str, Any]) -> list[list[str]]:
    """pdserve's stages per request (means, ms): the client's TTFT, the server's, and its parts."""
    rows = []
    for r in index["runs"]:
        stages = _read(out / r["dir"] / "stages.json")
        if not stages:
            continue
        ttft, prefill, handoff = stages["ttft_ms"], stages["prefill_rpc_ms"], stages["handoff_to_first_token_ms"]
        rest = ttft - prefill - handoff if None not in (ttft, prefill, handoff) else None
        rows.append([r["target"], r["workload"], ms(summaries[r["dir"]]["ttft"]["mean"]), _ms(ttft), _ms(prefill),
                     _ms(handoff), _ms(stages["nixl_pull_ms"]), _ms(rest)])
    return rows


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"


def thread_rows(out: Path, index: dict[str, Any], top: int = 6) -> list[list[str]]:
    """The threads that used the most CPU during each run, with the cores they may run on."""
    rows = []
    for r in index["runs"]:
        for t in (_read(out / r["dir"] / "threads.json") or [])[:top]:
            rows.append([r["target"], r["workload"], f"{t['process']} / {t['thread']}", t["cores"],
                         f"{t['cpu_s']:.1f}"])
    return rows


def report(out: Path) -> None:
    index = json.loads((out / "runs.json").read_text())
    summaries = {r["dir"]: json.loads((out / r["dir"] / "summary.json").read_text())["runs"][0]
                 for r in index["runs"]}
    md = [markdown_table(["target", "workload", "ok/n", "prompt tokens", "TTFT p50", "TTFT p90", "TPOT p50",
                          "TPOT p90", "ITL p50"], latency_rows(index, summaries))]
    if ratios := ratio_rows(index, summaries):
        md += ["", f"Ratios to {BASELINE} (medians, same requests):", "",
               markdown_table(["target", "workload", "TTFT p50", "TPOT p50"], ratios)]
    if stages := stage_rows(out, index, summaries):
        md += ["", "pdserve's stages, per-request means in ms (rest = server TTFT - prefill RPC - handoff):", "",
               markdown_table(["target", "workload", "client TTFT", "server TTFT", "prefill RPC",
                               "handoff to 1st token", "NIXL pull", "rest"], stages)]
    if threads := thread_rows(out, index):
        md += ["", "Threads that used the most CPU during each run (seconds; cores = Cpus_allowed_list):", "",
               markdown_table(["target", "workload", "process / thread", "cores", "CPU s"], threads)]
    (out / "results.md").write_text("\n".join(md) + "\n")
    (out / "results.json").write_text(json.dumps(summaries, indent=2) + "\n")
    print((out / "results.md").read_text())
