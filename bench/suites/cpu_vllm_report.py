"""The cpu_vllm suite's report: latencies per target and workload, ratios to each baseline present (plain
vLLM on one core, held loosely or strictly; pdserve without a pull), the inter-token gap by quarter of the
answer, and where the time went (pdserve's stages per request; the threads that used the cores). Reads only what
the suite wrote under OUT; writes ``OUT/results.md`` and ``OUT/results.json``. Every figure over rounds
is the median with the lowest and highest in brackets.

    python -m bench.suites.cpu_vllm --out bench/results/cpu_vllm --report-only
"""

from __future__ import annotations

import gzip
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.suites.report_util import markdown_table

BASELINE = "vllm-1core"
STRICT_BASELINE = "vllm-1core-strict"  # every thread on one core, as pdserve holds each worker
RATIO_TABLES: tuple[tuple[str, str], ...] = (
    (BASELINE, f"Ratios to {BASELINE} in the same round (p50 over p50):"),
    (STRICT_BASELINE, f"Ratios to {STRICT_BASELINE} (plain vLLM with every thread on one core) in the same round:"),
    ("vllm-strict-core1", "Ratios to vllm-strict-core1 (plain vLLM with every thread on core 1, the decode "
                          "worker's core) in the same round:"),
    ("pdserve-local", "Ratios to pdserve-local (the same server with every prompt prefilled on the decode "
                      "worker, so no NIXL pull) in the same round:"),
)
Run = dict[str, Any]


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def spread(values: Sequence[float | None], scale: float = 1000.0, digits: int = 0) -> str:
    """``median [lowest, highest]`` of the values present, times ``scale``; '-' when none is."""
    xs = sorted(v * scale for v in values if v is not None)
    if not xs:
        return "-"
    med = statistics.median(xs)
    return f"{med:,.{digits}f}" if len(xs) == 1 else f"{med:,.{digits}f} [{xs[0]:,.{digits}f}, {xs[-1]:,.{digits}f}]"


def cells(index: dict[str, Any]) -> dict[tuple[str, str], list[Run]]:
    """The runs of each (target, workload), in the order first run."""
    out: dict[tuple[str, str], list[Run]] = {}
    for r in index["runs"]:
        out.setdefault((r["target"], r["workload"]), []).append(r)
    return out


def latency_rows(groups: dict[tuple[str, str], list[Run]], summaries: dict[str, Any]) -> list[list[str]]:
    rows = []
    for (target, workload), runs in groups.items():
        s = [summaries[r["dir"]] for r in runs]
        ok = f"{sum(x['n_ok'] for x in s)}/{sum(x['n'] for x in s)}"
        prompt = statistics.median(x["prompt_tokens"] / max(1, x["n_ok"]) for x in s)

        def stat(metric: str, q: str, xs: list[Any] = s) -> list[float | None]:
            return [x[metric][q] for x in xs]

        rows.append([target, workload, str(len(runs)), ok, f"{prompt:.0f}", spread(stat("ttft", "p50")),
                     spread(stat("ttft", "p90")), spread(stat("tpot", "p50"), digits=1),
                     spread(stat("tpot", "p90"), digits=1)])
    return rows


def ratio_rows(groups: dict[tuple[str, str], list[Run]], summaries: dict[str, Any],
               baseline: str = BASELINE) -> list[list[str]]:
    """Each target's TTFT and TPOT medians over ``baseline``'s of the same round and workload."""
    base = {(r["workload"], r.get("repeat", 1)): summaries[r["dir"]] for r in groups_of(groups, baseline)}
    if not base:
        return []
    rows = []
    for (target, workload), runs in groups.items():
        if target in (BASELINE, baseline):
            continue
        ratios: dict[str, list[float | None]] = {"ttft": [], "tpot": []}
        for r in runs:
            b, x = base.get((workload, r.get("repeat", 1))), summaries[r["dir"]]
            for metric in ratios:
                ok = b is not None and b[metric]["p50"] and x[metric]["p50"]
                ratios[metric].append(x[metric]["p50"] / b[metric]["p50"] if ok and b else None)
        rows.append([target, workload, spread(ratios["ttft"], 1.0, 2), spread(ratios["tpot"], 1.0, 2)])
    return rows


def quarter_medians(itl_s: Sequence[float]) -> list[float] | None:
    """The median inter-token gap in each quarter of one answer, in order (the last quarter takes the
    remainder); None for fewer than four gaps. Pure."""
    q = len(itl_s) // 4
    if q == 0:
        return None
    parts = [itl_s[i * q:(i + 1) * q] for i in range(3)] + [itl_s[3 * q:]]
    return [statistics.median(part) for part in parts]


def itl_quarter_rows(out: Path, groups: dict[tuple[str, str], list[Run]]) -> list[list[str]]:
    """Per target and workload, each quarter of the answer: the median over a round's requests of their
    median gap there, then median [lowest, highest] over rounds (ms). Shows whether a slow decode is
    slow throughout or only at its start."""
    rows = []
    for (target, workload), runs in groups.items():
        per_round: list[list[float]] = []
        for r in runs:
            path = out / r["dir"] / "records.json.gz"
            if not path.exists():
                continue
            with gzip.open(path, "rt") as src:
                found = [m for rec in json.load(src) if rec.get("ok") and (m := quarter_medians(rec["itl_s"]))]
            if found:
                per_round.append([statistics.median(m[i] for m in found) for i in range(4)])
        if per_round:
            rows.append([target, workload, *(spread([x[i] for x in per_round], digits=0) for i in range(4))])
    return rows


def groups_of(groups: dict[tuple[str, str], list[Run]], target: str) -> list[Run]:
    return [r for (t, _), runs in groups.items() if t == target for r in runs]


def stage_rows(out: Path, groups: dict[tuple[str, str], list[Run]], summaries: dict[str, Any]) -> list[list[str]]:
    """pdserve's stages per request (means over a run's requests, ms; then over rounds)."""
    rows = []
    for (target, workload), runs in groups.items():
        stages = [(_read(out / r["dir"] / "stages.json"), summaries[r["dir"]]) for r in runs]
        stages = [(st, s) for st, s in stages if st]
        if not stages:
            continue

        def col(pick: Callable[[dict[str, Any]], float | None], found: list[Any] = stages) -> str:
            return spread([pick(st) for st, _ in found], 1.0)

        def rest(st: dict[str, Any]) -> float | None:
            parts = (st["ttft_ms"], st["prefill_rpc_ms"], st["handoff_to_first_token_ms"])
            if None in parts:
                return None
            in_ttft = 1.0 - (st.get("led_share") or 0.0)  # a led answer's TTFT holds no handoff
            return parts[0] - parts[1] - parts[2] * in_ttft

        def led(st: dict[str, Any]) -> float | None:
            return None if st.get("led_share") is None else 100 * st["led_share"]

        rows.append([target, workload, spread([s["ttft"]["mean"] for _, s in stages]), col(lambda st: st["ttft_ms"]),
                     col(lambda st: st["prefill_rpc_ms"]), col(lambda st: st["handoff_to_first_token_ms"]),
                     col(lambda st: st["nixl_pull_ms"]), col(led), col(rest)])
    return rows


def thread_rows(out: Path, groups: dict[tuple[str, str], list[Run]], top: int = 5) -> list[list[str]]:
    """The threads that used the most CPU in each cell's first round: the process (its pid), the thread
    (``main`` or its id), the cores it may run on, its CPU seconds and their share of the run's wall time."""
    rows = []
    for (target, workload), runs in groups.items():
        cpu = _read(out / runs[0]["dir"] / "cpu.json") or {}
        wall = cpu.get("seconds") or 0.0
        for t in (_read(out / runs[0]["dir"] / "threads.json") or [])[:top]:
            thread = "main" if t["tid"] == t["pid"] else f"{t['thread']} {t['tid']}"
            share = f"{t['cpu_s'] / wall:.0%}" if wall else "-"
            rows.append([target, workload, f"{t['process']} [{t['pid']}]", thread, t["cores"], f"{t['cpu_s']:.1f}",
                         share])
    return rows


def report(out: Path) -> None:
    index = json.loads((out / "runs.json").read_text())
    summaries = {r["dir"]: json.loads((out / r["dir"] / "summary.json").read_text())["runs"][0]
                 for r in index["runs"]}
    groups = cells(index)
    md = ["Latencies in ms, median over rounds [lowest, highest]:", "",
          markdown_table(["target", "workload", "rounds", "ok/n", "prompt tokens", "TTFT p50", "TTFT p90",
                          "TPOT p50", "TPOT p90"], latency_rows(groups, summaries))]
    for baseline, caption in RATIO_TABLES:
        if ratios := ratio_rows(groups, summaries, baseline):
            md += ["", caption, "", markdown_table(["target", "workload", "TTFT", "TPOT"], ratios)]
    if quarters := itl_quarter_rows(out, groups):
        md += ["", "Inter-token gap by quarter of the answer, ms (each request's median in each quarter; the median "
               "over a round's requests; median [lowest, highest] over rounds):", "",
               markdown_table(["target", "workload", "1st", "2nd", "3rd", "4th"], quarters)]
    if stages := stage_rows(out, groups, summaries):
        md += ["", "pdserve's stages, per-request means in ms. Handoff: the Generate call to the decode worker's "
               "first token (the answer's second where the prefill's token opened it: led %). Rest = server TTFT - "
               "prefill RPC - the handoff of answers not led:", "",
               markdown_table(["target", "workload", "client TTFT", "server TTFT", "prefill RPC",
                               "handoff", "NIXL pull", "led %", "rest"], stages)]
    if threads := thread_rows(out, groups):
        md += ["", "Threads that used the most CPU in each cell's first round (cores = Cpus_allowed_list; "
               "of wall = CPU seconds over the run's wall time):", "",
               markdown_table(["target", "workload", "process [pid]", "thread", "cores", "CPU s", "of wall"],
                              threads)]
    (out / "results.md").write_text("\n".join(md) + "\n")
    (out / "results.json").write_text(json.dumps(summaries, indent=2) + "\n")
    print((out / "results.md").read_text())
