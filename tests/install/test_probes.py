"""The base manifests probe /healthz and /readyz on the metrics port, and grant few capabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

BASE = Path(__file__).resolve().parents[2] / "manifests" / "base"


def pod_spec(file: str) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((BASE / file).read_text())["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("file", ["daemonset.yaml", "reconciler.yaml"])
def test_probes_use_the_health_endpoints_on_the_metrics_port(file: str) -> None:
    (container,) = pod_spec(file)["containers"]
    port = next(p for p in container["ports"] if p["name"] == "metrics")["containerPort"]
    assert f"--metrics-address=0.0.0.0:{port}" in container["args"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    # A check may wait up to 2 s for the loop it watches; the default of 1 s is too short.
    assert container["livenessProbe"]["timeoutSeconds"] >= 3
    assert container["readinessProbe"]["timeoutSeconds"] >= 3


def test_capabilities_are_dropped_and_only_sys_admin_comes_back() -> None:
    spec = pod_spec("daemonset.yaml")
    (daemon,) = spec["containers"]
    context = daemon["securityContext"]
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
    assert context["allowPrivilegeEscalation"] is False
    assert "privileged" not in context
    (install,) = spec["initContainers"]
    assert install["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    (reconciler,) = pod_spec("reconciler.yaml")["containers"]
    assert reconciler["securityContext"]["capabilities"] == {"drop": ["ALL"]}
