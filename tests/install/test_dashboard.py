"""The Grafana dashboard asks only for metrics we export, with label values they take."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from tests.install.test_monitoring import exported_names, render
from whereabouts_py.metrics.daemon import RESULT_OF_CODE
from whereabouts_py_dev.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "manifests" / "monitoring" / "grafana-dashboard.json"
# What the result label takes besides the CNI errors' names.
RESULTS = set(RESULT_OF_CODE.values()) | {"allocated", "released", "nothing_held"}
VERBS = {"ADD", "DEL", "CHECK", "GC", "STATUS"}


def exported() -> set[str]:
    """Every name a query may use: labelled histograms have no samples until observed."""
    names = exported_names()
    for family in REGISTRY.collect():
        if family.type == "histogram":
            names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "count", "sum"))
    return names


def panels() -> list[dict[str, Any]]:
    board = json.loads(DASHBOARD.read_text())
    return [panel for panel in board["panels"] if panel["type"] != "row"]


def test_every_query_uses_exported_documented_metrics() -> None:
    known = exported()
    documented = (ROOT / "docs" / "metrics.md").read_text()
    queries = [target["expr"] for panel in panels() for target in panel["targets"]]
    assert len(queries) >= 15
    for expr in queries:
        names = re.findall(r"whereabouts_\w+", expr)
        assert names, f"no whereabouts metric in {expr}"
        for name in names:
            assert name in known, f"{name} ({expr}) is not a metric the code exports"
            family = re.sub(r"_(bucket|count|sum)$", "", name)
            assert f"`{name}`" in documented or f"`{family}`" in documented, name
        for value in re.findall(r'result!?=~?"([^"]*)"', expr):
            assert value in RESULTS, f"result={value!r} is never exported ({expr})"
        for value in re.findall(r'verb!?="([^"]*)"', expr):
            assert value in VERBS, expr


def test_the_dashboard_shows_what_operators_ask_for() -> None:
    by_title = {panel["title"]: panel for panel in panels()}
    wanted = {
        "Pool usage per range": "whereabouts_pool_allocated",
        "Allocation rate by network": "whereabouts_allocations_total",
        "ADD latency": "whereabouts_request_duration_seconds_bucket",
        "Errors by CNI code": "whereabouts_request_duration_seconds_count",
        "GC releases by reason": "whereabouts_gc_releases_total",
        "Reconciler leader": "whereabouts_reconciler_leader",
    }
    for title, metric in wanted.items():
        assert title in by_title, title
        assert any(metric in t["expr"] for t in by_title[title]["targets"]), title
    # Per range, not per IPPool object: every pool gauge is aggregated by range.
    for panel in panels():
        for target in panel["targets"]:
            if "whereabouts_pool_" in target["expr"] and "batch" not in target["expr"]:
                assert "by (pool, network, range)" in target["expr"], target["expr"]
    ids = [panel["id"] for panel in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids))


def test_the_monitoring_component_ships_the_dashboard(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    objects = render(control_plane, tmp_path)
    config_map = next(o for o in objects if o["kind"] == "ConfigMap")
    assert config_map["metadata"]["name"] == "whereabouts-py-grafana-dashboard"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["whereabouts-py.json"]) == json.loads(
        DASHBOARD.read_text()
    )
