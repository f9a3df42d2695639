"""Readable text tables of ``RunSummary`` values (returns strings; printing is the caller's)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bench.metrics import RunSummary

GOODPUT_UNITS = {"poisson": "req/s", "closed": "concurrency", "burst": "burst size", "trace": "x speed"}


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=False))
        )

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.1f}"


def _num(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _load(s: RunSummary) -> str:
    v = s.load_value
    return f"{s.load_kind}={int(v) if float(v).is_integer() else v:g}"


# Columns of the results table: (header, cell).
COLUMNS: tuple[tuple[str, Callable[[RunSummary], str]], ...] = (
    ("target", lambda s: s.target),
    ("load", _load),
    ("ok/n", lambda s: f"{s.n_ok}/{s.n}"),
    ("req/s", lambda s: _num(s.req_per_s)),
    ("out tok/s", lambda s: _num(s.output_tok_per_s, "{:.1f}")),
    ("TTFT p50", lambda s: _ms(s.ttft.p50)),
    ("p90", lambda s: _ms(s.ttft.p90)),
    ("p99", lambda s: _ms(s.ttft.p99)),
    ("TPOT p50", lambda s: _ms(s.tpot.p50)),
    ("p90", lambda s: _ms(s.tpot.p90)),
    ("p99", lambda s: _ms(s.tpot.p99)),
    ("ITL p50", lambda s: _ms(s.itl.p50)),
    ("p99", lambda s: _ms(s.itl.p99)),
    ("E2E p50", lambda s: _ms(s.e2e.p50)),
    ("hit", lambda s: pct(s.hit_rate)),
    ("SLO ok", lambda s: pct(s.slo_attainment)),
)


def results_table(summaries: Sequence[RunSummary]) -> str:
    rows = [[cell(s) for _, cell in COLUMNS] for s in summaries]
    return "Latencies in ms; hit = cached / prompt tokens.\n" + table([h for h, _ in COLUMNS], rows)


# Compared quantities: (column, getter); ratio = target / first target at the same load point.
RATIOS: tuple[tuple[str, Callable[[RunSummary], float | None]], ...] = (
    ("req/s", lambda s: s.req_per_s),
    ("out tok/s", lambda s: s.output_tok_per_s),
    ("TTFT p50", lambda s: s.ttft.p50),
    ("TTFT p99", lambda s: s.ttft.p99),
    ("TPOT p50", lambda s: s.tpot.p50),
    ("TPOT p99", lambda s: s.tpot.p99),
    ("ITL p99", lambda s: s.itl.p99),
    ("hit", lambda s: s.hit_rate),
    ("SLO ok", lambda s: s.slo_attainment),
)


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or ``None`` when either is missing or ``b`` is 0."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def comparison_table(summaries: Sequence[RunSummary]) -> str | None:
    """Ratios of every other target to the first target, per load point; ``None`` with one target."""
    targets = list(dict.fromkeys(s.target for s in summaries))
    if len(targets) < 2:
        return None
    base = {(s.load_kind, s.load_value): s for s in summaries if s.target == targets[0]}
    rows = []
    for s in summaries:
        ref = base.get((s.load_kind, s.load_value))
        if s.target == targets[0] or ref is None:
            continue
        rows.append([s.target, _load(s), *(_num(ratio(get(s), get(ref)), "{:.2f}x") for _, get in RATIOS)])
    head = f"Ratios vs {targets[0]} (lower is better for latencies, higher for throughput, hit and SLO)."
    return head + "\n" + table(["target", "load", *(name for name, _ in RATIOS)], rows)


def routing_table(summaries: Sequence[RunSummary]) -> str | None:
    """Requests per prefill / decode worker and per route reason, from pdserve's response headers."""

    def cell(counts: tuple[tuple[str, int], ...]) -> str:
        return ", ".join(f"{k}: {v}" for k, v in counts) or "-"

    rows = [
        [s.target, _load(s), cell(s.prefill_workers), cell(s.decode_workers), cell(s.route_reasons)]
        for s in summaries
        if s.prefill_workers or s.decode_workers or s.route_reasons
    ]
    if not rows:
        return None
    return "Requests per worker (X-Prefill-Worker, X-Decode-Worker) and route reason (X-Route-Reason)\n" + table(
        ["target", "load", "prefill", "decode", "reason"], rows
    )


def errors_table(summaries: Sequence[RunSummary]) -> str | None:
    rows = [[s.target, _load(s), str(n), msg] for s in summaries for msg, n in s.errors]
    return "Errors\n" + table(["target", "load", "count", "error"], rows) if rows else None


def goodput_lines(goodput: dict[str, float | None], load_kind: str, attainment: float) -> str:
    unit = GOODPUT_UNITS.get(load_kind, "load")
    what = "goodput (req/s)" if load_kind == "poisson" else f"highest {unit} meeting the SLOs"
    lines = [
        f"SLO goodput (DistServe, Zhong et al., OSDI 2024): highest tested load with >= {100 * attainment:g}% "
        "of requests meeting every SLO"
    ]
    for target, value in goodput.items():
        shown = "none of the tested loads" if value is None else f"{value:g}"
        lines.append(f"  {target}: {what} = {shown}")
    return "\n".join(lines)
