"""What a Grafana dashboard's PromQL asks of an exporter, checked against a real exposition.

``promql_parser`` (Python bindings of the Rust ``promql-parser`` crate) parses each expression; it
rejects syntax errors and unknown functions. ``Catalogue`` holds the series a ``/metrics`` exposition
offers (histogram families expand to ``_bucket``/``_sum``/``_count``, counters to ``_total``) and the
label names each carries, plus the target labels Prometheus adds when it scrapes (``job``,
``instance``). ``check_expr`` walks an expression and reports every series it names that is not
exported, every matcher on a label the series lacks, every ``=`` matcher on a value no sample has, every
``by``/``without``/``on``/``ignoring``/``group_*`` label missing from the vectors it applies to, vector
operands whose label sets cannot match one-to-one, and every ``{{label}}`` of the legend missing from
the result. ``unfiltered`` reports every selector of a series carrying a given label (``model``) that does
not filter that label with a given regex (a dashboard variable such as ``$model``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import promql_parser as pq
from prometheus_client.parser import text_string_to_metric_families

TARGET_LABELS = frozenset({"job", "instance"})
# Grafana's own interval variables become a duration; dashboard variables become their "All" value.
_GRAFANA_INTERVALS = re.compile(r"\$(?:__rate_interval|__interval_ms|__interval|__range_s|__range_ms|__range)\b")
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count"),
             "gauge": ("",), "untyped": ("",), "info": ("_info",), "stateset": ("",), "gaugehistogram": ("_bucket",)}


@dataclass
class Series:
    """One exported series name: the family it belongs to, its label names, and the values seen per label."""

    family: str
    labels: set[str] = field(default_factory=set)
    values: dict[str, set[str]] = field(default_factory=dict)
    sampled: bool = False


@dataclass
class Catalogue:
    series: dict[str, Series] = field(default_factory=dict)

    @classmethod
    def from_exposition(cls, text: str, declared: Mapping[str, tuple[str, ...]] | None = None) -> Catalogue:
        """The series of a text exposition. A labelled family that has no sample yet shows only its
        ``# HELP``/``# TYPE``; its label names are then taken from ``declared`` (family name -> labels)."""
        cat = cls()
        for family in text_string_to_metric_families(text):
            for suffix in _SUFFIXES.get(family.type, ("",)):
                name = family.name + suffix
                cat.series[name] = Series(family.name, set((declared or {}).get(family.name, ())))
            for sample in family.samples:
                entry = cat.series.get(sample.name)
                if entry is None:  # ``_created`` and friends: real series, but not ones to chart
                    entry = cat.series[sample.name] = Series(family.name)
                entry.sampled = True
                entry.labels.update(sample.labels)
                for key, value in sample.labels.items():
                    entry.values.setdefault(key, set()).add(value)
        return cat

    def families_without_samples(self, names: set[str]) -> set[str]:
        return {self.series[n].family for n in names if n in self.series and not self.series[n].sampled}


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """``expr`` as Grafana would send it: interval variables as ``5m``, dashboard variables as given."""
    expr = _GRAFANA_INTERVALS.sub("5m", expr)

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise ValueError(f"unknown dashboard variable ${name} in {expr!r}")
        return variables[name]

    return _VARIABLE.sub(one, expr)


def selector_name(vs: pq.VectorSelector) -> str | None:
    return vs.name or next((m.value for m in vs.matchers.matchers if m.name == "__name__"), None)


def legend_labels(legend: str) -> set[str]:
    return set(_LEGEND_LABEL.findall(legend or ""))


@dataclass
class Checker:
    """Collects ``problems`` while working out the label names each subexpression's result carries
    (``None`` for a scalar or string)."""

    cat: Catalogue
    problems: list[str] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    selectors: list[pq.VectorSelector] = field(default_factory=list)

    def labels(self, node: Any) -> set[str] | None:
        if isinstance(node, pq.MatrixSelector):
            return self.selector(node.vector_selector)
        if isinstance(node, pq.VectorSelector):
            return self.selector(node)
        if isinstance(node, (pq.ParenExpr, pq.UnaryExpr, pq.SubqueryExpr)):
            return self.labels(node.expr)
        if isinstance(node, pq.Call):
            return self.call(node)
        if isinstance(node, pq.AggregateExpr):
            return self.aggregate(node)
        if isinstance(node, pq.BinaryExpr):
            return self.binary(node)
        return None  # number or string literal

    def selector(self, vs: pq.VectorSelector) -> set[str]:
        self.selectors.append(vs)
        name = selector_name(vs)
        if name is None:
            self.problems.append(f"selector without a metric name: {vs}")
            return set(TARGET_LABELS)
        self.names.add(name)
        series = self.cat.series.get(name)
        if series is None:
            self.problems.append(f"{name}: not exported")
            return set(TARGET_LABELS)
        have = series.labels | TARGET_LABELS
        for m in vs.matchers.matchers:
            if m.name == "__name__":
                continue
            if m.name not in have:
                self.problems.append(f"{name}: no label {m.name!r} (has {sorted(series.labels)})")
            elif m.op == pq.MatchOp.Equal and m.name not in TARGET_LABELS and series.sampled \
                    and m.value not in series.values.get(m.name, set()):
                self.problems.append(f"{name}: no sample with {m.name}={m.value!r} "
                                     f"(seen {sorted(series.values.get(m.name, set()))})")
        return have

    def call(self, node: pq.Call) -> set[str] | None:
        args = [self.labels(a) for a in node.args]
        func = node.func.name
        if func in ("scalar", "time", "pi"):
            return None
        if func == "vector":
            return set()
        first = next((a for a in args if a is not None), None)
        if func == "histogram_quantile":
            if first is not None and "le" not in first:
                self.problems.append(f"histogram_quantile over a vector without 'le': {node}")
            return None if first is None else first - {"le"}
        if func in ("label_replace", "label_join") and first is not None:
            return first | {node.args[1].val}
        return first

    def aggregate(self, node: pq.AggregateExpr) -> set[str]:
        inner = self.labels(node.expr) or set()
        if node.param is not None:
            self.labels(node.param)
        op = str(node.op)
        if node.modifier is None:
            return set(inner) if op in ("topk", "bottomk", "limitk", "limit_ratio") else set()
        wanted = set(node.modifier.labels)
        missing = wanted - inner
        if missing:
            self.problems.append(f"{op} by/without {sorted(missing)}: not on {sorted(inner)} in {node}")
        if op in ("topk", "bottomk", "limitk", "limit_ratio"):
            return set(inner)
        return wanted if node.modifier.type == pq.AggModifierType.By else inner - wanted

    def binary(self, node: pq.BinaryExpr) -> set[str] | None:
        lhs, rhs = self.labels(node.lhs), self.labels(node.rhs)
        if lhs is None or rhs is None:
            return rhs if lhs is None else lhs
        op, mod = str(node.op), node.modifier
        matching = mod.matching if mod is not None else None
        on = set(matching.labels) if matching is not None else set()
        include = matching is not None and matching.type == pq.LabelModifierType.Include
        for side, have in (("left", lhs), ("right", rhs)):
            if include and on - have:
                self.problems.append(f"on({sorted(on - have)}): not on the {side} side of {node}")
        if op in ("and", "or", "unless"):
            return lhs | rhs if op == "or" else lhs
        card = mod.card if mod is not None else pq.VectorMatchCardinality.OneToOne
        keys = (lambda s: s & on) if include else (lambda s: s - on)
        if card == pq.VectorMatchCardinality.OneToOne:
            if keys(lhs) != keys(rhs):
                self.problems.append(f"one-to-one match of {sorted(keys(lhs))} with {sorted(keys(rhs))}: {node}")
            return keys(lhs) if include else lhs - on
        extra = set((mod.group_labels if mod is not None else None) or ())  # mod is set: card is not 1:1
        one, many = (rhs, lhs) if card == pq.VectorMatchCardinality.ManyToOne else (lhs, rhs)
        if extra - one:
            self.problems.append(f"group_left/right({sorted(extra - one)}): not on the 'one' side of {node}")
        return many | extra


def check_expr(expr: str, cat: Catalogue, legend: str = "") -> tuple[set[str], list[str]]:
    """The series ``expr`` names and the problems found (a ``ValueError`` if it does not parse)."""
    tree = pq.parse(expr)
    checker = Checker(cat)
    out = checker.labels(tree)
    missing = legend_labels(legend) - (out or set())
    if missing:
        checker.problems.append(f"legend {legend!r} uses {sorted(missing)}, not on the result {sorted(out or ())}")
    return checker.names, checker.problems


def unfiltered(expr: str, cat: Catalogue, label: str, value: str) -> list[str]:
    """Each selector of ``expr`` naming an exported series that carries ``label`` without a
    ``label=~"value"`` matcher (``value`` as written in the dashboard, e.g. ``$model``)."""
    checker = Checker(cat)
    checker.labels(pq.parse(expr))
    problems = []
    for vs in checker.selectors:
        name = selector_name(vs)
        series = cat.series.get(name or "")
        if series is None or label not in series.labels:
            continue  # no name or not exported: check_expr reports it
        if not any(m.name == label and m.op == pq.MatchOp.Re and m.value == value for m in vs.matchers.matchers):
            problems.append(f"{name}: no {label}=~{value!r} matcher in {vs}")
    return problems
