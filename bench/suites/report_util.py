"""Reading suite runs back (summaries, records, CPU samples) and drawing figures with matplotlib's Agg
canvas (no display). Used by the ``*_report`` modules of ``bench/suites`` and by ``bench.plots``."""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench import metrics

INT_FIELDS = {"repeat", "output_tokens_counted", "turn", "prompt_tokens", "cached_tokens", "output_tokens",
              "status", "chunks"}
FLOAT_FIELDS = {"load_value", "ttft_s", "tpot_s", "sent_s", "e2e_s", "scheduled_s", "itl_mean_s", "itl_max_s"}
Cell = tuple[float, float, float]  # (median, lowest, highest) of a figure over repeats or seeds


def read_records_csv(path: Path) -> list[dict[str, Any]]:
    """``records.csv`` back as typed dicts (empty cells -> None; no per-chunk times: those are in the JSON)."""
    def typed(key: str, value: str) -> Any:
        if value == "":
            return None
        if key == "ok":
            return value == "True"
        if key in INT_FIELDS:
            return int(value)
        if key in FLOAT_FIELDS:
            return float(value)
        return value

    with path.open(newline="", encoding="utf-8") as f:
        return [{k: typed(k, v) for k, v in row.items()} for row in csv.DictReader(f)]


def load_run(run_dir: Path) -> dict[str, Any]:
    """``summary`` (the one run of summary.json), ``records`` (list of dicts) and ``cpu`` of one run folder.
    Records come from ``records.json.gz`` / ``records.json`` when kept, else from ``records.csv``."""
    summary = json.loads((run_dir / "summary.json").read_text())
    gz = run_dir / "records.json.gz"
    if gz.exists():
        with gzip.open(gz, "rt") as f:
            records = json.load(f)
    elif (run_dir / "records.json").exists():
        records = json.loads((run_dir / "records.json").read_text())
    else:
        records = read_records_csv(run_dir / "records.csv")
    cpu = json.loads((run_dir / "cpu.json").read_text()) if (run_dir / "cpu.json").exists() else {}
    (run,) = summary["runs"]
    return {"summary": run, "records": records, "cpu": cpu, "config": summary["config"]}


def ms(x: float | None, scale: float = 1.0, digits: int = 0) -> str:
    """Seconds -> milliseconds text (times ``scale``), '-' for None."""
    return "-" if x is None else f"{x * 1000 * scale:,.{digits}f}"


def percentile(values: Sequence[float], q: float) -> float | None:
    """``bench.metrics.percentile``, or None for no values."""
    return metrics.percentile(values, q) if values else None


def spread(values: Sequence[float | None]) -> Cell | None:
    """(median, lowest, highest) of the values present; None when none is."""
    xs = [v for v in values if v is not None]
    return (statistics.median(xs), min(xs), max(xs)) if xs else None


def cell(c: Cell | None, fmt: Callable[[float], str]) -> str:
    """``median [lowest, highest]``, each through ``fmt``; '-' for None."""
    return "-" if c is None else f"{fmt(c[0])} [{fmt(c[1])}, {fmt(c[2])}]"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    marks = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def new_figure(width: float, height: float, rows: int = 1, cols: int = 1) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height))
    return fig, fig.subplots(rows, cols, squeeze=False)


def save(fig: Figure, path: Path, dpi: int = 100) -> Path:
    FigureCanvasAgg(fig)  # attaches the Agg canvas to the figure
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def cdf(ax: Any, values: Sequence[float], label: str, **kw: Any) -> None:
    xs = sorted(values)
    if not xs:
        return
    ys = [(i + 1) / len(xs) for i in range(len(xs))]
    ax.step([xs[0], *xs], [0.0, *ys], where="post", label=label, **kw)


def report_main(doc: str, default_out: str, build: Callable[[Path], tuple[Any, str]],
                plot: Callable[[Any, Path], Path], figure: str) -> None:
    """The command of a ``*_report`` module: ``--out DIR``; writes ``results.md`` (the text ``build``
    returns), ``results.json`` (its data) and ``figure`` (``plot`` of the data) into DIR, prints the text."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=default_out)
    out = Path(p.parse_args().out)
    result, text = build(out)
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out / figure)
    print(text)


def spread_errorbar(ax: Any, xs: Sequence[float], cells: Sequence[Cell], label: str) -> None:
    """Plot each cell's median (of ``(median, lowest, highest)``) at its x, with a bar from lowest to highest."""
    ax.errorbar(list(xs), [c[0] for c in cells], yerr=[[c[0] - c[1] for c in cells], [c[2] - c[0] for c in cells]],
                marker="o", capsize=3, label=label)
