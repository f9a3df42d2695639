"""``pdserve-bench``: parse, run the plan, summarise, write files, print tables.

Drives any OpenAI-compatible server; pdserve's routing headers are reported when present. Examples:
``pdserve-bench --help`` (``bench.config.EXAMPLES``).

Exit status: 0 when at least one request succeeded, 1 when none did (or the targets could not be
reached), 2 for bad arguments.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import replace

from bench import metrics, output, plots, report
from bench.config import build_parser, from_args
from bench.driver import execute


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(list(argv) if argv is not None else None)
    try:
        config = replace(from_args(ns), argv=tuple(sys.argv[1:] if argv is None else argv))
    except ValueError as e:
        parser.print_usage(sys.stderr)
        print(f"pdserve-bench: error: {e}", file=sys.stderr)
        return 2
    try:
        outcome = asyncio.run(execute(config))
    except RuntimeError as e:
        print(f"pdserve-bench: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pdserve-bench: interrupted", file=sys.stderr)
        return 130

    order = {t.name: i for i, t in enumerate(config.targets)}
    results = sorted(outcome.results, key=lambda r: (order[r.key.target], r.key.load.value, r.key.repeat))
    summaries = metrics.summarize_all(results, config.slo)
    goodput = (
        metrics.goodput_by_target(summaries, config.goodput_attainment) if config.slo.active and summaries else None
    )
    models = dict(outcome.models)
    paths = output.write_all(config.out_dir, config, results, summaries, goodput, models, outcome.skipped)
    if config.plots and summaries:
        paths += plots.write_plots(config.out_dir, results, summaries)

    print("Models: " + ", ".join(f"{t} -> {m}" for t, m in models.items()))
    sections = [
        report.results_table(summaries),
        report.comparison_table(summaries),
        report.routing_table(summaries),
        report.errors_table(summaries),
        None if goodput is None else report.goodput_lines(goodput, config.points[0].kind, config.goodput_attainment),
        "Wrote: " + ", ".join(str(p) for p in paths),
    ]
    print("\n\n".join(s for s in sections if s))
    return 0 if any(s.n_ok for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
