"""Where a real-vLLM run's time goes: per-thread CPU of the server's processes, and pdserve's own stages.

* ``thread_times(root)`` reads, for every thread of ``root`` and its descendants, its CPU seconds so far
  (``/proc/PID/task/TID/stat``: utime + stime), its name and the cores it may run on
  (``Cpus_allowed_list``). ``thread_usage(before, after)`` is the difference: which threads used the
  cores during a workload, and on which cores (pure).
* ``stage_totals(text)`` reads pdserve's Prometheus exposition (``scrape_stages(url)``: a live server's)
  into the cumulative figures of each stage of a request (server-side TTFT, the prefill RPC, the handoff
  to the decode worker's first token, the NIXL pulls the decode workers report); ``stage_means(before,
  after)`` gives the per-request means of a workload between two scrapes (pure).

Both are read at the edges of a workload: nothing here samples in the background or changes a process.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.suites.common import CLK_TCK, http_get, process_tree


@dataclass(frozen=True)
class ThreadTime:
    """One thread's CPU seconds so far and where it may run."""

    pid: int
    tid: int
    process: str  # the process's name (``/proc/PID/comm``)
    thread: str  # the thread's name
    cpu_s: float
    cores: str  # Cpus_allowed_list, e.g. "1" or "0-1"


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def thread_times(root: int) -> dict[tuple[int, int], ThreadTime]:
    """Every live thread of ``root``'s process tree, keyed by (pid, tid)."""
    out: dict[tuple[int, int], ThreadTime] = {}
    for pid in process_tree(root):
        process = (_read(f"/proc/{pid}/comm") or "?").strip()
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            stat = _read(f"/proc/{pid}/task/{tid}/stat")
            status = _read(f"/proc/{pid}/task/{tid}/status")
            if stat is None or status is None:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            cores = next((line.split(":", 1)[1].strip() for line in status.splitlines()
                          if line.startswith("Cpus_allowed_list:")), "?")
            out[(pid, tid)] = ThreadTime(pid, tid, process, name, (int(fields[11]) + int(fields[12])) / CLK_TCK, cores)
    return out


def thread_usage(before: dict[tuple[int, int], ThreadTime], after: dict[tuple[int, int], ThreadTime],
                 top: int = 12) -> list[dict[str, Any]]:
    """The ``top`` threads by CPU seconds used between the two readings (threads started in between count
    from zero), as plain rows; threads that used none are left out."""
    used = []
    for key, now in after.items():
        spent = now.cpu_s - (before[key].cpu_s if key in before else 0.0)
        if spent > 0:
            used.append({**asdict(now), "cpu_s": round(spent, 2)})
    return sorted(used, key=lambda row: -row["cpu_s"])[:top]


@dataclass(frozen=True)
class StageTotals:
    """Cumulative sums (seconds) and counts of a request's stages, from one scrape of pdserve."""

    ttft_sum: float = 0.0
    ttft_count: float = 0.0
    prefill_sum: float = 0.0
    prefill_count: float = 0.0
    handoff_sum: float = 0.0
    handoff_count: float = 0.0
    pull_s: float = 0.0  # NIXL pull seconds the decode workers report
    pulls: float = 0.0
    led: float = 0.0  # answers the prefill's first token opened (orchestrator.lead_token)
    answers: float = 0.0  # answers with a first token


_HISTOGRAMS = {"pdserve_ttft_seconds": "ttft", "pdserve_prefill_seconds": "prefill",
               "pdserve_kv_handoff_seconds": "handoff"}


def stage_totals(text: str) -> StageTotals:
    """The stage figures in a Prometheus text exposition of pdserve (summed over labels)."""
    figures: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        stage = _HISTOGRAMS.get(family.name)
        for s in family.samples:
            if stage and s.name.endswith("_sum"):
                figures[f"{stage}_sum"] = figures.get(f"{stage}_sum", 0.0) + s.value
            elif stage and s.name.endswith("_count"):
                figures[f"{stage}_count"] = figures.get(f"{stage}_count", 0.0) + s.value
            elif s.name == "pdserve_worker_load" and s.labels.get("figure") in ("kv_pull_seconds", "kv_pulls"):
                key = "pull_s" if s.labels["figure"] == "kv_pull_seconds" else "pulls"
                figures[key] = figures.get(key, 0.0) + s.value
            elif s.name == "pdserve_first_tokens_total":
                figures["answers"] = figures.get("answers", 0.0) + s.value
                if s.labels.get("source") == "prefill":
                    figures["led"] = figures.get("led", 0.0) + s.value
    return StageTotals(**figures)


def scrape_stages(url: str) -> StageTotals:
    """``stage_totals`` of the pdserve server at ``url`` now (all zero when it does not answer)."""
    return stage_totals(http_get(f"{url}/metrics", timeout_s=5.0) or "")


def stage_means(before: StageTotals, after: StageTotals) -> dict[str, float | None]:
    """Per-request means in milliseconds between two scrapes: server-side TTFT, prefill RPC, handoff (the
    Generate call to the decode worker's first token) and the NIXL pull within it (None where no request
    reached that stage); and ``led_share``, the share of answers the prefill's first token opened, whose
    TTFT holds no handoff."""

    def mean(total: str, count: str) -> float | None:
        n = getattr(after, count) - getattr(before, count)
        return round(1000 * (getattr(after, total) - getattr(before, total)) / n, 1) if n > 0 else None

    return {"ttft_ms": mean("ttft_sum", "ttft_count"), "prefill_rpc_ms": mean("prefill_sum", "prefill_count"),
            "handoff_to_first_token_ms": mean("handoff_sum", "handoff_count"), "nixl_pull_ms": mean("pull_s", "pulls"),
            "led_share": _share(after.led - before.led, after.answers - before.answers)}


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 3) if whole > 0 else None
