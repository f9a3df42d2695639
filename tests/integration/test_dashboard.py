"""The Grafana dashboard and the Prometheus config under ``configs/`` against a running pdserve.

Every PromQL expression of the dashboard (panel targets and the selectors of its ``label_values``
variables) is parsed with ``promql_parser`` (Rust ``promql-parser``); each series it names must be in the
``/metrics`` exposition of a pdserve front end over simulated workers (1 prefill + 1 decode, API keys on),
after traffic that makes its labelled series appear: chat and text completions, a repeated prompt (cache
hits), a stream, a 429 from a rate-limited key, and a client that leaves mid-stream (an abort).
Matchers, ``by``/``on`` clauses and legends must use labels those series carry (``dashboard_promql``), and
every selector of a series with a ``model`` label (all but the refusals) must filter it on ``$model``.
The provisioning YAML files must point Grafana at that dashboard and data source, and Prometheus at
127.0.0.1:8000/metrics.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import StartWorkers
from dashboard_promql import Catalogue, check_expr, substitute, unfiltered
from pd_harness import MODEL_NAME, FrontEnd, LoopThread, sim_config, sse_events

from orchestrator.api.text import Tokenizer
from orchestrator.auth.keys import KeyRecord, append_key, hash_key, new_key
from orchestrator.config import AuthConfig

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "configs" / "grafana"
DASHBOARD = json.loads((GRAFANA / "dashboards" / "pdserve.json").read_text())
PROMETHEUS = yaml.safe_load((ROOT / "configs" / "prometheus" / "prometheus.yml").read_text())
LONG_PROMPT = ("Dashboards are only as good as the metrics behind them, so check every query. " * 6).strip()
# Charted, but this traffic cannot make one: a void handoff or an abandoned lease needs a lease running out or
# a prefill worker dying mid-pull (test_worker_kills.py does both), a resync a gap in a worker's KV events.
# Every family but the refusals is labelled by model, so none has a series before its first increment; only
# their declared label names can be checked here.
MAY_BE_EMPTY = {"pdserve_kv_handoffs_void"}
# What issue 11 asks the dashboard to show, by family.
REQUIRED = {"pdserve_requests", "pdserve_ttft_seconds", "pdserve_tpot_seconds", "pdserve_itl_seconds",
            "pdserve_e2e_seconds", "pdserve_cached_tokens", "pdserve_route_decisions", "pdserve_kv_handoff_bytes",
            "pdserve_kv_handoff_seconds", "pdserve_worker_load", "pdserve_worker_healthy",
            "pdserve_kv_handoffs_void", "pdserve_requests_refused"}


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def variable_values() -> dict[str, str]:
    """Each dashboard variable as Grafana sends it when "All" is selected."""
    return {v["name"]: v.get("allValue") or ".*" for v in DASHBOARD["templating"]["list"]}


TARGETS = [(f"{p['title']} [{t['refId']}]", substitute(t["expr"], variable_values()), t.get("legendFormat", ""))
           for p in all_panels(DASHBOARD["panels"]) for t in p.get("targets", [])]
# The same expressions with the model variable left as written (``$model``, ``${model}``, ``${model:regex}``).
MODEL_VARIABLE = "$model"
AS_WRITTEN = [(f"{p['title']} [{t['refId']}]", substitute(t["expr"], {**variable_values(), "model": MODEL_VARIABLE}))
              for p in all_panels(DASHBOARD["panels"]) for t in p.get("targets", [])]
VARIABLES = [v for v in DASHBOARD["templating"]["list"] if v["type"] == "query"]


def label_values_query(var: dict[str, Any]) -> tuple[str, str]:
    """The selector and label of a ``label_values(<selector>, <label>)`` variable query."""
    query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
    assert query.startswith("label_values(") and query.endswith(")"), query
    selector, _, label = query[len("label_values("):-1].rpartition(",")
    return substitute(selector.strip(), variable_values()), label.strip()


# -- the live exposition ---------------------------------------------------------------------------------------


def declared_labels(front: FrontEnd) -> dict[str, tuple[str, ...]]:
    """Label names of the running front end's metric families, for those without a sample yet."""
    return {m._name: tuple(m._labelnames) for m in front.service.metrics.families.members()}


def drive(front: FrontEnd, key: str, limited_key: str) -> None:
    """Traffic that makes each labelled series of the dashboard appear."""
    url, auth = front.url, {"authorization": f"Bearer {key}"}
    chat = {"model": MODEL_NAME, "messages": [{"role": "user", "content": LONG_PROMPT}], "max_tokens": 4}
    assert httpx.post(f"{url}/v1/chat/completions", json=chat, headers=auth, timeout=30).status_code == 200
    assert front.wait_until(lambda: front.metric("pdserve_prefix_index_blocks") > 0, 5)
    assert httpx.post(f"{url}/v1/chat/completions", json=chat, headers=auth, timeout=30).status_code == 200
    text = {"model": MODEL_NAME, "prompt": "Once upon a time", "max_tokens": 8, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=text, headers=auth, timeout=30) as reply:
        assert reply.status_code == 200 and list(sse_events(reply.iter_lines()))[-1] == "[DONE]"
    limited = {"authorization": f"Bearer {limited_key}"}
    statuses = [httpx.post(f"{url}/v1/completions", json={**text, "stream": False}, headers=limited,
                           timeout=30).status_code for _ in range(2)]
    assert statuses == [200, 429]
    long_story = {**text, "prompt": "Tell me a very long story", "max_tokens": 900}
    with httpx.stream("POST", f"{url}/v1/completions", json=long_story, headers=auth, timeout=30) as reply:
        assert reply.status_code == 200
        for seen, _ in enumerate(sse_events(reply.iter_lines())):
            if seen == 2:
                break  # leave mid-stream: the front end aborts the request on its decode worker
    assert front.wait_until(lambda: front.metric("pdserve_aborts_total", role="decode") > 0, 10)


@pytest.fixture(scope="module")
def catalogue(tiny_model_dir: Path, tokenizer: Tokenizer, harness_loop: LoopThread, start_workers: StartWorkers,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalogue]:
    keys_file = tmp_path_factory.mktemp("dashboard-keys") / "keys.jsonl"
    key, limited_key = new_key(), new_key()
    append_key(keys_file, KeyRecord("team-a", hash_key(key)))
    append_key(keys_file, KeyRecord("team-b", hash_key(limited_key), requests_per_minute=1))
    config = sim_config(tiny_model_dir, prefill=1, decode=1)
    config = config.model_copy(update={"auth": AuthConfig(keys_file=str(keys_file))})
    _, endpoints = start_workers(config)
    front = FrontEnd.start(harness_loop, config, endpoints, tokenizer)
    try:
        drive(front, key, limited_key)
        text = httpx.get(f"{front.url}/metrics", timeout=10).text
        yield Catalogue.from_exposition(text, declared_labels(front))
    finally:
        front.stop()


# -- the dashboard's PromQL ----------------------------------------------------------------------------------


def test_the_dashboard_has_queries() -> None:
    assert len(TARGETS) >= 30 and {v["name"] for v in VARIABLES} >= {"job", "instance", "model"}


@pytest.mark.parametrize(("where", "expr"), [(w, e) for w, e, _ in TARGETS], ids=[w for w, _, _ in TARGETS])
def test_every_panel_expression_parses(where: str, expr: str) -> None:
    import promql_parser

    promql_parser.parse(expr)  # raises ValueError on a syntax error or an unknown function


def test_every_series_and_label_is_exported(catalogue: Catalogue) -> None:
    problems, named = [], set()
    for where, expr, legend in TARGETS:
        names, found = check_expr(expr, catalogue, legend)
        named |= names
        problems += [f"{where}: {p}" for p in found]
    assert not problems, "\n".join(problems)
    families = {catalogue.series[n].family for n in named}
    assert families >= REQUIRED, sorted(REQUIRED - families)
    assert catalogue.families_without_samples(named) <= MAY_BE_EMPTY


def test_variables_query_exported_series(catalogue: Catalogue) -> None:
    for var in VARIABLES:
        selector, label = label_values_query(var)
        names, problems = check_expr(selector, catalogue)
        assert names and not problems, (var["name"], problems)
        carried = set().union(*(catalogue.series[n].labels for n in names)) | {"job", "instance"}
        assert label in carried, (var["name"], label)


def test_every_model_series_is_filtered_by_the_model_variable(catalogue: Catalogue) -> None:
    # Not vacuous: the families carry `model`, except the refusals (admission comes before the model).
    assert "model" in catalogue.series["pdserve_requests_total"].labels
    assert "model" in catalogue.series["pdserve_kv_handoffs_void_total"].labels  # declared, no sample
    assert "model" not in catalogue.series["pdserve_requests_refused_total"].labels
    problems = [f"{where}: {p}" for where, expr in AS_WRITTEN for p in unfiltered(expr, catalogue, "model",
                                                                                   MODEL_VARIABLE)]
    assert not problems, "\n".join(problems)


def test_the_checker_catches_mistakes(catalogue: Catalogue) -> None:
    """Guards against a vacuous check: each of these is wrong in one way."""
    wrong = {
        "pdserve_ttft_bucket": "not exported",
        'sum(rate(pdserve_requests_total{code="200"}[5m]))': "no label 'code'",
        'pdserve_worker_load{figure="queue"}': "no sample with figure='queue'",
        "sum by (worker) (rate(pdserve_requests_total[5m]))": "by/without ['worker']",
        "histogram_quantile(0.9, sum(rate(pdserve_ttft_seconds_bucket[5m])))": "without 'le'",
        "sum by (pool) (rate(pdserve_route_decisions_total[5m])) / sum(rate(pdserve_requests_total[5m]))":
            "one-to-one match",
    }
    for expr, message in wrong.items():
        _, problems = check_expr(expr, catalogue)
        assert any(message in p for p in problems), (expr, problems)
    _, problems = check_expr("sum(rate(pdserve_tokens_total[5m]))", catalogue, "{{kind}}")
    assert any("legend" in p for p in problems)
    unfiltered_model = {  # expression -> the series whose selector lacks model=~"$model"
        'sum(rate(pdserve_requests_total{job=~"$job"}[5m]))': {"pdserve_requests_total"},
        'max by (worker) (pdserve_worker_load{model=~".*"})': {"pdserve_worker_load"},
        'sum(pdserve_worker_healthy{model="$model"})': {"pdserve_worker_healthy"},
        'sum by (model) (rate(pdserve_cached_tokens_total{model=~"$model"}[5m]))'
        ' / sum by (model) (rate(pdserve_tokens_total[5m]))': {"pdserve_tokens_total"},
        'sum(rate(pdserve_requests_refused_total[5m]))': set(),  # no model label to filter
    }
    for expr, names in unfiltered_model.items():
        problems = unfiltered(expr, catalogue, "model", MODEL_VARIABLE)
        assert {p.split(":")[0] for p in problems} == names, (expr, problems)


# -- provisioning ------------------------------------------------------------------------------------------------


def test_panels_use_the_datasource_variable_and_unique_ids() -> None:
    panels = list(all_panels(DASHBOARD["panels"]))
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(set(refs)) == len(refs) and all(t["datasource"] == panel["datasource"] for t in panel["targets"])
    (source,) = [v for v in DASHBOARD["templating"]["list"] if v["type"] == "datasource"]
    assert source["name"] == "datasource" and source["query"] == "prometheus"
    assert DASHBOARD["uid"] and "__inputs" not in DASHBOARD  # loads as is, no import step


def test_provisioning_files_point_at_the_dashboard_and_prometheus() -> None:
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "pdserve.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "${PDSERVE_DASHBOARDS}"
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"]
    (job,) = PROMETHEUS["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"] == [{"targets": ["127.0.0.1:8000"]}]
    assert source["jsonData"]["timeInterval"] == PROMETHEUS["global"]["scrape_interval"]
