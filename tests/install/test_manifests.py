"""`kubectl apply -k manifests/` on a bare cluster, and its RBAC is exactly enough.

The control plane knows our ServiceAccounts' user names through static
tokens (identities `daemon` and `reconciler`), so the daemon and the
reconciler run here with precisely the rights the manifests grant them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from tests.reconciler.harness import running_reconciler
from whereabouts_py.cni.install import install_cni
from whereabouts_py_dev.controlplane import ControlPlane
from whereabouts_py_dev.nodes import SimulatedNodes
from whereabouts_py_dev.runtime import invoke, pod_args

ROOT = Path(__file__).resolve().parents[2]
NETWORK: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "rbacnet",
    "type": "macvlan",
    "ipam": {"type": "whereabouts", "range": "10.44.0.0/22"},
}


@pytest.fixture(scope="module")
def applied(control_plane: ControlPlane) -> list[dict[str, Any]]:
    rendered = control_plane.kubectl("kustomize", str(ROOT / "manifests")).stdout
    control_plane.kubectl("apply", "-k", str(ROOT / "manifests"))
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def kind(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == name)


def test_base_applies_on_a_bare_cluster(applied: list[dict[str, Any]]) -> None:
    kinds = sorted({o["kind"] for o in applied})
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "DaemonSet",
        "Deployment",
        "Namespace",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    daemonset = kind(applied, "DaemonSet")["spec"]["template"]["spec"]
    assert daemonset["hostNetwork"] is True
    assert daemonset["tolerations"] == [{"operator": "Exists"}]
    assert daemonset["initContainers"][0]["args"][0] == "install-cni"
    daemon = daemonset["containers"][0]
    assert daemon["args"][0] == "daemon"
    assert {"livenessProbe", "readinessProbe", "resources"} <= set(daemon)
    deployment = kind(applied, "Deployment")["spec"]
    assert deployment["replicas"] == 2
    assert deployment["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def can_i(plane: ControlPlane, identity: str, *args: str) -> bool:
    answer = plane.kubectl("auth", "can-i", *args, identity=identity, check=False)
    return answer.stdout.strip() == "yes"


def test_rights_are_least_privilege(control_plane: ControlPlane, applied: list[Any]) -> None:
    ns = ["-n", "kube-system"]
    assert can_i(control_plane, "daemon", "update", "ippools.whereabouts.cni.cncf.io", *ns)
    # Our Leases live in a namespace of their own, never next to the control plane's.
    leases = ["-n", "whereabouts-py-leases"]
    assert can_i(control_plane, "daemon", "create", "leases.coordination.k8s.io", *leases)
    assert not can_i(control_plane, "daemon", "create", "leases.coordination.k8s.io", *ns)
    assert not can_i(control_plane, "daemon", "delete", "ippools.whereabouts.cni.cncf.io", *ns)
    assert not can_i(control_plane, "daemon", "list", "pods", "-A")
    assert not can_i(control_plane, "daemon", "get", "secrets", *ns)
    assert not can_i(
        control_plane, "daemon", "update", "ippools.whereabouts.cni.cncf.io", "-n", "default"
    )
    assert can_i(control_plane, "reconciler", "watch", "pods", "-A")
    assert can_i(
        control_plane,
        "reconciler",
        "delete",
        "overlappingrangeipreservations.whereabouts.cni.cncf.io",
        *ns,
    )
    assert not can_i(control_plane, "reconciler", "delete", "pods", "-A")
    assert not can_i(control_plane, "reconciler", "get", "secrets", *ns)
    assert not can_i(control_plane, "nobody", "get", "ippools.whereabouts.cni.cncf.io", *ns)


def test_daemon_and_reconciler_work_with_exactly_these_rights(
    control_plane: ControlPlane, applied: list[Any], namespace: str, tmp_path: Path
) -> None:
    shim = install_cni(tmp_path / "bin")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "rbac-pod", "namespace": namespace},
        "spec": {"nodeName": "node-r", "containers": [{"name": "c", "image": "pause"}]},
    }
    control_plane.kubectl("create", "-f", "-", input_text=json.dumps(pod))
    lease_flags = ["--lease-namespace", "whereabouts-py-leases"]  # as the manifests set it
    with SimulatedNodes(
        control_plane,
        tmp_path / "nodes",
        ["node-r"],
        "kube-system",
        identity="daemon",
        extra_args=lease_flags,
    ) as nodes:
        env = nodes["node-r"].environment()
        added = invoke(
            shim,
            "ADD",
            NETWORK,
            container_id="ctr-rbac",
            ifname="net1",
            netns="/var/run/netns/x",
            args=pod_args(namespace, "rbac-pod"),
            env=env,
        )
        assert added.ok, added.stdout + nodes["node-r"].log.read_text()[-2000:]
        (address,) = added.addresses()
        with running_reconciler(
            control_plane,
            "kube-system",
            tmp_path / "rec",
            kubeconfig=control_plane.kubeconfig_for("reconciler"),
            extra_args=lease_flags,
        ) as reconciler:
            control_plane.kubectl(
                "delete", "pod", "-n", namespace, "rbac-pod", "--grace-period=0", "--force"
            )
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                listed = json.loads(
                    control_plane.kubectl(
                        "get", "ippools", "-n", "kube-system", "-o", "json"
                    ).stdout
                )
                holders = [
                    a
                    for item in listed["items"]
                    for a in item["spec"]["allocations"].values()
                    if a["podref"] == f"{namespace}/rbac-pod"
                ]
                if not holders:
                    break
                time.sleep(0.2)
            assert holders == [], reconciler.text()[-3000:]
            assert "Forbidden" not in reconciler.text()
        assert address.startswith("10.44.")
