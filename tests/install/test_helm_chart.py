"""The Helm chart (manifests/helm/whereabouts-py) installs what the kustomize base installs.

Rendered by the real helm (built from its Go module, cached like the other
tools) and compared object by object, parsed, with ``kubectl kustomize
manifests``; its values change what they say; the API server accepts the
whole render, and a real install of its namespaced objects into a fresh
namespace runs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from whereabouts_py_dev.controlplane import ControlPlane
from whereabouts_py_dev.helm import ensure_helm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "manifests" / "helm" / "whereabouts-py"
Key = tuple[str, str, str, str]


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Any:
    binary = ensure_helm()
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(
        os.environ,
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
    )

    def run(*args: str) -> str:
        done = subprocess.run(
            [str(binary), *args], capture_output=True, text=True, env=env, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    return run


def parse(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_key(objects: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    keyed: dict[Key, dict[str, Any]] = {}
    for obj in objects:
        meta = obj["metadata"]
        key = (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])
        assert key not in keyed, f"{key} rendered twice"
        keyed[key] = obj
    return keyed


def render(helm: Any, *flags: str) -> list[dict[str, Any]]:
    return parse(helm("template", "whereabouts-py", str(CHART), "--include-crds", *flags))


def test_default_values_render_the_kustomize_base(helm: Any, control_plane: ControlPlane) -> None:
    chart = by_key(render(helm, "--namespace", "kube-system"))
    base = by_key(parse(control_plane.kubectl("kustomize", str(ROOT / "manifests")).stdout))
    assert sorted(chart) == sorted(base)
    for key, obj in base.items():
        if obj["kind"] == "CustomResourceDefinition":
            # The chart ships crds/ as they are (Helm installs them once and never
            # deletes them, so an uninstall keeps every pool); kustomize labels them.
            assert obj["metadata"].pop("labels") == {"app.kubernetes.io/part-of": "whereabouts-py"}
        assert chart[key] == obj, f"{key} differs from the kustomize base"
    # The chart's own release namespace does not move the pools out of kube-system.
    elsewhere = by_key(render(helm, "--namespace", "default"))
    assert sorted(elsewhere) == sorted(chart)
    lint = helm("lint", str(CHART))
    assert "0 chart(s) failed" in lint


def test_values_change_what_they_say(helm: Any) -> None:
    objects = render(
        helm,
        "--set",
        "image.repository=registry.example/wpy,image.tag=1.2.3,image.pullPolicy=Always",
        "--set",
        "namespace=ipam,leaseNamespace.name=ipam-leases",
        "--set",
        "daemon.resources.limits.memory=1Gi,reconciler.replicas=3",
        "--set",
        "daemon.tolerations[0].key=dedicated,daemon.tolerations[0].operator=Exists",
        "--set",
        "reconciler.tolerations[0].operator=Exists",
        "--set",
        "metrics.daemonPort=19741,podMonitor.enabled=true,podMonitor.interval=15s",
        "--set",
        "prometheusRule.enabled=true,podMonitor.labels.release=prom",
    )
    keyed = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    daemonset = keyed[("DaemonSet", "whereabouts-daemon")]
    assert daemonset["metadata"]["namespace"] == "ipam"
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    (daemon,) = pod["containers"]
    assert daemon["image"] == "registry.example/wpy:1.2.3"
    assert daemon["imagePullPolicy"] == "Always"
    assert pod["initContainers"][0]["image"] == "registry.example/wpy:1.2.3"
    assert daemon["resources"]["limits"]["memory"] == "1Gi"
    assert "--metrics-address=0.0.0.0:19741" in daemon["args"]
    assert "--lease-namespace=ipam-leases" in daemon["args"]
    assert daemon["ports"] == [{"name": "metrics", "containerPort": 19741}]
    reconciler = keyed[("Deployment", "whereabouts-reconciler")]
    assert reconciler["spec"]["replicas"] == 3
    assert reconciler["spec"]["template"]["spec"]["tolerations"] == [{"operator": "Exists"}]
    assert keyed[("Namespace", "ipam-leases")]
    assert keyed[("Role", "whereabouts-daemon-leases")]["metadata"]["namespace"] == "ipam-leases"
    binding = keyed[("ClusterRoleBinding", "whereabouts-reconciler")]
    assert binding["subjects"][0]["namespace"] == "ipam"
    monitor = keyed[("PodMonitor", "whereabouts-py")]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["podMetricsEndpoints"][0]["interval"] == "15s"
    rule = keyed[("PrometheusRule", "whereabouts-py")]
    shipped = yaml.safe_load(
        (ROOT / "manifests" / "monitoring" / "prometheusrule.yaml").read_text()
    )
    assert rule["spec"] == shipped["spec"]
    service = keyed[("Service", "whereabouts-metrics")]
    assert service["spec"]["ports"][0]["port"] == 19741


def test_the_api_server_accepts_the_chart(
    helm: Any, control_plane: ControlPlane, namespace: str
) -> None:
    whole = helm("template", "whereabouts-py", str(CHART), "--include-crds", "-n", "kube-system")
    # Helm creates Namespaces before what goes into them; a server-side dry run of
    # the Roles needs the Leases' namespace to exist (the base creates the same one).
    namespaces = [o for o in parse(whole) if o["kind"] == "Namespace"]
    assert [o["metadata"]["name"] for o in namespaces] == ["whereabouts-py-leases"]
    control_plane.kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(namespaces))
    control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input_text=whole)
    # A real install of the namespaced objects into a fresh namespace (the cluster-wide
    # ones are shared with the other tests of this control plane).
    objects = render(
        helm,
        "--set",
        f"namespace={namespace},leaseNamespace.name={namespace},leaseNamespace.create=false",
    )
    namespaced = [o for o in objects if o["metadata"].get("namespace") == namespace]
    assert {o["kind"] for o in namespaced} == {
        "DaemonSet",
        "Deployment",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    }
    text = yaml.safe_dump_all(namespaced)
    control_plane.kubectl("apply", "-f", "-", input_text=text)
    names = control_plane.kubectl(
        "get", "daemonset,deployment,role", "-n", namespace, "-o", "name"
    ).stdout.split()
    assert sorted(names) == [
        "daemonset.apps/whereabouts-daemon",
        "deployment.apps/whereabouts-reconciler",
        "role.rbac.authorization.k8s.io/whereabouts-daemon",
        "role.rbac.authorization.k8s.io/whereabouts-daemon-leases",
        "role.rbac.authorization.k8s.io/whereabouts-reconciler",
        "role.rbac.authorization.k8s.io/whereabouts-reconciler-leases",
    ]
