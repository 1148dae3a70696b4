"""The Grafana dashboard in deploy/grafana: every query parses, and every metric it reads is one we export.

Input: each dashboard JSON under deploy/grafana (and the Helm chart's copy), whose panel queries are
parsed by `promql-parser` (a PromQL parser, after Grafana's own variables are given values), and the
`/metrics` text of a running controller (the flow harness: fake cluster, fake Buildkite, the real app),
read with prometheus_client's exposition parser. A dashboard that reads a renamed or misspelt metric
shows an empty panel in production; here it fails.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.conftest import DEPLOY
from tests.flow.harness import running_stack

DASHBOARDS = sorted((DEPLOY / "grafana").glob("*.json"))
CHART_DASHBOARD = DEPLOY / "helm" / "buildkite-controller" / "dashboards" / "buildkite-controller.json"
# Grafana's built-in interval variables, given a value so the query is plain PromQL.
GRAFANA_DURATIONS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h"}
# The suffixes each metric type's samples carry in the text exposition format.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels") or [])


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets") or []:
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["definition"])
            assert match, f"variable {variable['name']}: only label_values(<selector>, <label>) is checked"
            yield f"variable {variable['name']!r}", match[1]


def metric_names(expr: str) -> set[str]:
    """The metric names a query reads, from the PromQL parser's syntax tree."""
    for variable, value in GRAFANA_DURATIONS.items():
        expr = expr.replace(variable, value)
    names: set[str] = set()
    unnamed: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        elif isinstance(node, promql_parser.VectorSelector):
            unnamed.append(str(node))

    promql_parser.walk(promql_parser.parse(expr), visit, None)
    assert not unnamed, f"selectors without a metric name cannot be checked: {unnamed}"
    return names


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every sample name the running controller's /metrics can carry."""
    with running_stack(tmp_path_factory.mktemp("metrics")) as stack:
        text = stack.get("/metrics").text
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def test_there_is_a_dashboard_and_the_chart_ships_the_same_one() -> None:
    assert DASHBOARDS, "no dashboard in deploy/grafana"
    assert CHART_DASHBOARD.read_bytes() == (DEPLOY / "grafana" / "buildkite-controller.json").read_bytes()


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_every_query_parses_and_reads_only_exported_metrics(path: Path, exported: set[str]) -> None:
    dashboard = json.loads(path.read_text())
    checked = 0
    for where, expr in queries(dashboard):
        names = metric_names(expr)
        assert names, f"{where}: reads no metric"
        unknown = names - exported
        assert not unknown, f"{where}: {sorted(unknown)} are not exported by /metrics"
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_the_dashboard_shows_what_operators_asked_for(path: Path) -> None:
    read = set().union(*(metric_names(expr) for _, expr in queries(json.loads(path.read_text()))))
    assert {
        "buildkite_controller_phase_seconds_bucket",  # webhook -> pod latency histogram
        "buildkite_controller_jobs_confirmed_total",  # jobs by outcome
        "buildkite_controller_jobs_failed_total",  # ... and failure reason
        "buildkite_controller_pods_in_flight",  # in flight
        "buildkite_controller_max_in_flight",  # vs limit
        "buildkite_controller_graphql_budget_remaining",
        "buildkite_controller_sweep_unannounced_jobs_total",
        "buildkite_controller_is_leader",  # leader changes
    } <= read


def test_a_misspelt_metric_or_a_broken_query_is_caught(exported: set[str]) -> None:
    assert metric_names("sum(rate(buildkite_controller_pods_creatd_total[5m]))") - exported == {
        "buildkite_controller_pods_creatd_total"
    }
    # Counters are exported with _total; the bare family name is not a series.
    assert "buildkite_controller_pods_created" not in exported
    assert "buildkite_controller_pods_created_total" in exported
    with pytest.raises(ValueError):
        metric_names("sum(rate(buildkite_controller_pods_created_total[5m])")
