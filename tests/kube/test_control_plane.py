"""The local control plane is a real Kubernetes API: versions, CRDs, CAS, RBAC."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from whereabouts_py_dev.binaries import KUBERNETES_VERSION
from whereabouts_py_dev.controlplane import ControlPlane, process_running

# Some tests start their own control plane through the devcluster command.
pytestmark = pytest.mark.kube

GROUP, VERSION = "whereabouts.cni.cncf.io", "v1alpha1"

# An IPPool exactly as the Go whereabouts project writes it.
GO_SHAPED_POOL: dict[str, Any] = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "IPPool",
    "metadata": {"name": "192.168.2.0-24"},
    "spec": {
        "range": "192.168.2.0/24",
        "allocations": {
            "1": {"id": "3f2c1d0e9b8a", "podref": "default/web-0", "ifname": "net1"},
            "2": {"id": "a1b2c3d4e5f6", "podref": "default/web-1", "ifname": "net1"},
            "17": {"id": "0f1e2d3c4b5a", "podref": "prod/db-0", "ifname": "net2"},
        },
    },
}


def api_for(plane: ControlPlane, identity: str = "admin") -> client.CustomObjectsApi:
    return client.CustomObjectsApi(
        config.new_client_from_config(config_file=str(plane.kubeconfig_for(identity)))
    )


def test_server_reports_the_pinned_version(control_plane: ControlPlane) -> None:
    answer = control_plane.kubectl("version", "-o", "json")
    versions = json.loads(answer.stdout)
    assert versions["serverVersion"]["gitVersion"] == KUBERNETES_VERSION
    assert versions["clientVersion"]["gitVersion"] == KUBERNETES_VERSION


def test_crds_are_established(control_plane: ControlPlane) -> None:
    names = control_plane.kubectl("get", "crd", "-o", "name").stdout.split()
    assert sorted(names) == [
        # KubeVirt's persistent-address claims (crds/ipamclaims, from its own module).
        "customresourcedefinition.apiextensions.k8s.io/ipamclaims.k8s.cni.cncf.io",
        "customresourcedefinition.apiextensions.k8s.io/ippools.whereabouts.cni.cncf.io",
        "customresourcedefinition.apiextensions.k8s.io/network-attachment-definitions.k8s.cni.cncf.io",
        "customresourcedefinition.apiextensions.k8s.io/nodeslicepools.whereabouts.cni.cncf.io",
        "customresourcedefinition.apiextensions.k8s.io/overlappingrangeipreservations.whereabouts.cni.cncf.io",
    ]


def test_go_shaped_ippool_round_trips_unchanged(
    control_plane: ControlPlane, namespace: str
) -> None:
    api = api_for(control_plane)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "ippools", GO_SHAPED_POOL)
    stored = api.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "ippools", "192.168.2.0-24"
    )
    assert stored["spec"] == GO_SHAPED_POOL["spec"]
    assert stored["kind"] == "IPPool"


def test_go_shaped_reservation_and_node_slice_pool_are_accepted(
    control_plane: ControlPlane, namespace: str
) -> None:
    api = api_for(control_plane)
    reservation = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OverlappingRangeIPReservation",
        "metadata": {"name": "2001--0"},
        "spec": {"containerid": "abc123", "podref": "default/web-0", "ifname": "net1"},
    }
    api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "overlappingrangeipreservations", reservation
    )
    stored = api.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "overlappingrangeipreservations", "2001--0"
    )
    assert stored["spec"] == reservation["spec"]

    slices = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "NodeSlicePool",
        "metadata": {"name": "slicenet"},
        "spec": {"range": "10.0.0.0/8", "sliceSize": "/16"},
        "status": {"allocations": [{"nodeName": "node-a", "sliceRange": "10.0.0.0/16"}]},
    }
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "nodeslicepools", slices)
    stored = api.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "nodeslicepools", "slicenet"
    )
    assert stored["spec"] == slices["spec"]
    assert stored["status"] == slices["status"]


def test_stale_resource_version_is_rejected_with_conflict(
    control_plane: ControlPlane, namespace: str
) -> None:
    api = api_for(control_plane)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "ippools", GO_SHAPED_POOL)
    first = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "ippools", "192.168.2.0-24")
    winner = copy.deepcopy(first)
    winner["spec"]["allocations"]["3"] = {"id": "c1", "podref": "default/a", "ifname": "net1"}
    api.replace_namespaced_custom_object(
        GROUP, VERSION, namespace, "ippools", "192.168.2.0-24", winner
    )
    loser = copy.deepcopy(first)  # still carries the old resourceVersion
    loser["spec"]["allocations"]["3"] = {"id": "c2", "podref": "default/b", "ifname": "net1"}
    with pytest.raises(ApiException) as raised:
        api.replace_namespaced_custom_object(
            GROUP, VERSION, namespace, "ippools", "192.168.2.0-24", loser
        )
    assert raised.value.status == 409
    stored = api.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "ippools", "192.168.2.0-24"
    )
    assert stored["spec"]["allocations"]["3"]["podref"] == "default/a"


def test_identity_without_rights_is_forbidden(control_plane: ControlPlane) -> None:
    nobody = api_for(control_plane, "nobody")
    with pytest.raises(ApiException) as raised:
        nobody.list_cluster_custom_object(GROUP, VERSION, "ippools")
    assert raised.value.status == 403
    admin = api_for(control_plane, "admin")
    listed = admin.list_cluster_custom_object(GROUP, VERSION, "ippools")
    assert isinstance(listed["items"], list)


def test_malformed_ippool_is_refused_by_the_schema(
    control_plane: ControlPlane, namespace: str
) -> None:
    bad = copy.deepcopy(GO_SHAPED_POOL)
    bad["spec"]["allocations"]["1"] = {"ifname": "net1"}  # neither id nor podref
    result = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input_text=json.dumps(bad), check=False
    )
    assert result.returncode != 0
    assert "podref" in result.stderr


def devcluster(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "whereabouts_py_dev", "devcluster", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_devcluster_exec_runs_kubectl_against_a_fresh_control_plane() -> None:
    result = devcluster("exec", "--", "sh", "-c", "kubectl get ippools -A && echo listed")
    assert result.returncode == 0, result.stderr
    assert "listed" in result.stdout


def test_devcluster_exec_passes_on_failure() -> None:
    result = devcluster("exec", "--", "false")
    assert result.returncode == 1


def test_devcluster_up_and_down(tmp_path: Any) -> None:
    directory = tmp_path / "cp"
    up = devcluster("up", "--dir", str(directory))
    assert up.returncode == 0, up.stderr
    kubeconfig = up.stdout.strip().splitlines()[-1]
    assert kubeconfig == str(directory / "kubeconfig")
    state = json.loads((directory / "controlplane.json").read_text())
    pids = list(state["pids"].values())
    try:
        plane = ControlPlane.load(directory)
        assert plane.alive()
        assert "ippools" in plane.kubectl("api-resources", "-o", "name").stdout
    finally:
        down = devcluster("down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    assert not directory.exists()
    for pid in pids:
        assert not process_running(pid)
