"""The monitoring component renders, and its alerts use metrics that exist and are documented."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from prometheus_client import REGISTRY

import whereabouts_py.metrics.daemon
import whereabouts_py.metrics.reconciler
from whereabouts_py_dev.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[2]


def exported_names() -> set[str]:
    assert whereabouts_py.metrics.daemon and whereabouts_py.metrics.reconciler
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        names.update(sample.name for sample in family.samples)
    return names


def render(plane: ControlPlane, tmp_path: Path) -> list[dict[str, Any]]:
    shutil.copytree(ROOT / "manifests", tmp_path / "manifests")
    shutil.copytree(ROOT / "crds", tmp_path / "crds")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [../manifests]\ncomponents: [../manifests/monitoring]\n"
    )
    rendered = plane.kubectl("kustomize", str(overlay)).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def test_alerts_use_real_documented_metrics(control_plane: ControlPlane, tmp_path: Path) -> None:
    objects = render(control_plane, tmp_path)
    rule = next(o for o in objects if o["kind"] == "PrometheusRule")
    monitor = next(o for o in objects if o["kind"] == "PodMonitor")
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"WhereaboutsPoolAlmostFull", "WhereaboutsGarbageCollectionFailing"} <= set(alerts)
    assert "> 0.9" in alerts["WhereaboutsPoolAlmostFull"]
    documented = (ROOT / "docs" / "metrics.md").read_text()
    exported = exported_names()
    used = {name for expr in alerts.values() for name in re.findall(r"whereabouts_\w+", expr)}
    assert used
    for name in used:
        assert name in exported, f"{name} is not a metric the code exports"
        assert f"`{name}`" in documented, f"{name} is not documented in docs/metrics.md"


def test_every_exported_metric_is_documented() -> None:
    documented = (ROOT / "docs" / "metrics.md").read_text()
    for family in REGISTRY.collect():
        if family.name.startswith("whereabouts_"):
            name = f"{family.name}_total" if family.type == "counter" else family.name
            assert f"`{name}`" in documented, f"{name} is missing from docs/metrics.md"
