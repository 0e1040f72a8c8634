"""Persistent addresses (IPAMClaim) end to end on two real nodes, made as KubeVirt makes them.

The devcluster's control plane has the IPAMClaim CRD (``crds/ipamclaims``)
from its start; on a cluster without it the fixture installs it first, as
docs/ipamclaims.md asks (the reconciler finds the resource only when it
starts). Then the product from its image and the devcluster overlay, as in
test_end_to_end.py. One test walks a virtual machine's life: start on
node-a, live migration to node-b while the source runs, stop, start again,
deletion of the claim. Only kubelets, Multus and our daemons act on the pods;
the test plays KubeVirt (claim, networks annotation) and reads what the API
shows.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from whereabouts_py_dev.cluster import Cluster

from .conftest import run_pod, tools_pod, wait_service_account
from .test_end_to_end import (
    INSTALL_NAMESPACE,
    NETWORK_STATUS,
    NETWORKS,
    apply,
    assert_check_clean,
    get_json,
    product_installed,
    wait_until,
    whereabouts,
)

pytestmark = [pytest.mark.kube, pytest.mark.netns]

REPOSITORY = Path(__file__).resolve().parents[2]
CLAIM_CRDS = REPOSITORY / "crds" / "ipamclaims"
CLAIM_CRD = "ipamclaims.k8s.cni.cncf.io"
NETWORK = "vmnet"
# KubeVirt names the pod interface of a VM network "pod" + the first 11 hex
# digits of the SHA-256 of the network's name, and writes it into the claim.
INTERFACE = "pod" + hashlib.sha256(NETWORK.encode()).hexdigest()[:11]
CLAIM = f"vm-a.{NETWORK}"
# Two assignable addresses: the claim's and one other.
CLAIMED, OTHER = "10.68.0.10", "10.68.0.11"
RANGE = "10.68.0.0/24"
RANGE_LABEL = f"{CLAIMED}-{OTHER} of {RANGE}"  # how our errors name the narrowed range
# The reconciler's sweep runs every 300 s: a release this fast is its watch of IPAMClaims.
CLAIM_RELEASE_BOUND_S = 10.0


# --- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def installed_with_claims(cluster: Cluster) -> Iterator[Cluster]:
    """The IPAMClaim CRD (ours unless the cluster has one), then the product as users install it."""
    had_crd = cluster.kubectl("get", "crd", CLAIM_CRD, check=False).returncode == 0
    try:
        if not had_crd:
            cluster.kubectl("apply", "-k", str(CLAIM_CRDS))
            cluster.kubectl(
                "wait", "--for=condition=Established", f"crd/{CLAIM_CRD}", "--timeout=60s"
            )
        with product_installed(cluster):
            yield cluster
    finally:
        if not had_crd:
            cluster.kubectl(
                "delete", "-k", str(CLAIM_CRDS), "--ignore-not-found", "--wait=true", check=False
            )


@pytest.fixture
def vm_namespace(installed_with_claims: Cluster) -> Iterator[str]:
    name = f"vm-{uuid.uuid4().hex[:8]}"
    installed_with_claims.kubectl("create", "namespace", name)
    wait_service_account(installed_with_claims, name)
    yield name
    installed_with_claims.kubectl(
        "delete", "namespace", name, "--wait=true", "--timeout=120s", check=False
    )


# --- objects and readings ----------------------------------------------------------------------
def persistent_nad() -> dict[str, Any]:
    config = {
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "type": "macvlan",
        "master": "eth1",
        "mode": "bridge",
        "allowPersistentIPs": True,
        "ipam": {
            "type": "whereabouts",
            "range": RANGE,
            "range_start": CLAIMED,
            "range_end": OTHER,
        },
    }
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": NETWORK},
        "spec": {"config": json.dumps(config)},
    }


def ipam_claim() -> dict[str, Any]:
    return {
        "apiVersion": "k8s.cni.cncf.io/v1alpha1",
        "kind": "IPAMClaim",
        "metadata": {"name": CLAIM},
        "spec": {"network": NETWORK, "interface": INTERFACE},
    }


def launcher(name: str, node: str, namespace: str, claim: str | None) -> dict[str, Any]:
    """A virt-launcher-like pod on ``node``: the networks element KubeVirt writes for the VM."""
    element: dict[str, str] = {"name": NETWORK, "namespace": namespace, "interface": INTERFACE}
    if claim is not None:
        element["ipam-claim-reference"] = claim
    return tools_pod(name, node, {NETWORKS: json.dumps([element])})


def attached_ips(pod: dict[str, Any]) -> list[str]:
    """The VM interface's addresses in the pod's network-status (Multus writes it after ADD)."""
    status = json.loads(pod["metadata"].get("annotations", {}).get(NETWORK_STATUS, "[]"))
    return [ip for entry in status if entry.get("interface") == INTERFACE for ip in entry["ips"]]


def shown_in_pod(cluster: Cluster, namespace: str, pod: str) -> str:
    return str(
        cluster.kubectl("exec", "-n", namespace, pod, "--", "ip", "addr", "show", INTERFACE).stdout
    )


def claim_status(cluster: Cluster, namespace: str) -> dict[str, Any]:
    status: dict[str, Any] = get_json(cluster, "ipamclaim", "-n", namespace, CLAIM).get(
        "status", {}
    )
    return status


def pool_entries(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """``kubectl get ippools``: the entries of our range, by address."""
    entries: dict[str, dict[str, Any]] = {}
    for pool in get_json(cluster, "ippools", "-n", INSTALL_NAMESPACE)["items"]:
        if pool["spec"]["range"] != RANGE:
            continue
        network = ipaddress.ip_network(pool["spec"]["range"])
        for offset, entry in (pool["spec"].get("allocations") or {}).items():
            entries[str(network.network_address + int(offset))] = entry
    return entries


def reserved(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """The overlapping-range reservations of our range, by address."""
    items = get_json(cluster, "overlappingrangeipreservations", "-n", INSTALL_NAMESPACE)["items"]
    found = {item["metadata"]["name"]: item["spec"] for item in items}
    return {name: spec for name, spec in found.items() if name in (CLAIMED, OTHER)}


def pool_name(cluster: Cluster) -> str:
    (name,) = [
        pool["metadata"]["name"]
        for pool in get_json(cluster, "ippools", "-n", INSTALL_NAMESPACE)["items"]
        if pool["spec"]["range"] == RANGE
    ]
    return str(name)


def delete_pods(cluster: Cluster, namespace: str, *names: str) -> None:
    cluster.kubectl("delete", "pod", "-n", namespace, *names, "--wait=true", "--timeout=90s")


def refused(cluster: Cluster, namespace: str, pod: str) -> list[str]:
    events = get_json(cluster, "events", "-n", namespace)["items"]
    return [
        event["message"]
        for event in events
        if event["involvedObject"].get("name") == pod
        and event["reason"] == "FailedCreatePodSandBox"
        and f"no free address in {RANGE_LABEL}" in event["message"]
    ]


# --- the test ----------------------------------------------------------------------------------
def test_a_vm_keeps_its_address_across_migration_and_restart_until_its_claim_is_deleted(
    installed_with_claims: Cluster, vm_namespace: str
) -> None:
    cluster, ns = installed_with_claims, vm_namespace
    claim_ref = f"{ns}/{CLAIM}"
    apply(cluster, ns, persistent_nad())
    apply(cluster, ns, ipam_claim())

    # The VM starts on node-a: its address is the claim's, written into status.ips.
    source = run_pod(cluster, ns, launcher("virt-launcher-a-1", "node-a", ns, CLAIM))
    assert attached_ips(source) == [CLAIMED]
    assert f" {CLAIMED}/24 " in shown_in_pod(cluster, ns, "virt-launcher-a-1")
    status = claim_status(cluster, ns)
    assert status["ips"] == [f"{CLAIMED}/24"]
    assert status["ownerPod"] == {"name": "virt-launcher-a-1"}
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("IPsAllocated", "True", "SuccessfulAllocation")
    ]
    entry = pool_entries(cluster)[CLAIMED]
    assert (entry["ipamclaimref"], entry["podref"], entry["node"], entry["ifname"]) == (
        claim_ref, f"{ns}/virt-launcher-a-1", "node-a", INTERFACE
    )  # fmt: skip

    # Live migration: the target pod on node-b gets the same address while the source runs.
    target = run_pod(cluster, ns, launcher("virt-launcher-a-2", "node-b", ns, CLAIM))
    assert target["spec"]["nodeName"] == "node-b"
    assert attached_ips(target) == [CLAIMED]
    assert f" {CLAIMED}/24 " in shown_in_pod(cluster, ns, "virt-launcher-a-2")
    running = get_json(cluster, "pod", "-n", ns, "virt-launcher-a-1")
    assert (
        running["status"]["phase"] == "Running" and "deletionTimestamp" not in running["metadata"]
    )
    entry = pool_entries(cluster)[CLAIMED]
    assert (entry["ipamclaimref"], entry["podref"], entry["node"]) == (
        claim_ref, f"{ns}/virt-launcher-a-2", "node-b"
    )  # fmt: skip
    assert claim_status(cluster, ns)["ips"] == [f"{CLAIMED}/24"]

    # A pod without the claim on the same network gets the other address, never the claim's.
    web = run_pod(cluster, ns, launcher("web", "node-b", ns, None))
    assert attached_ips(web) == [OTHER]
    entries = pool_entries(cluster)
    assert sorted(entries) == [CLAIMED, OTHER]
    assert entries[OTHER]["podref"] == f"{ns}/web" and not entries[OTHER].get("ipamclaimref")
    assert reserved(cluster)[CLAIMED]["ipamclaimref"] == claim_ref

    # The VM stops: both its pods go, the address stays the claim's with no pod holding it.
    delete_pods(cluster, ns, "virt-launcher-a-1", "virt-launcher-a-2")
    time.sleep(5)  # the kubelets' DELs and the reconciler's look at the deleted pods are done
    entries = pool_entries(cluster)
    assert sorted(entries) == [CLAIMED, OTHER]
    assert entries[CLAIMED]["ipamclaimref"] == claim_ref
    assert reserved(cluster)[CLAIMED]["ipamclaimref"] == claim_ref
    assert claim_status(cluster, ns)["ips"] == [f"{CLAIMED}/24"]
    shown = whereabouts(cluster, "show", pool_name(cluster), "-o", "json")
    assert shown.returncode == 0, shown.stderr
    rows = {row["address"]: row for row in json.loads(shown.stdout)}
    assert rows[CLAIMED]["claim"] == claim_ref, rows
    leaks = whereabouts(cluster, "leaks", "-o", "json")
    assert leaks.returncode == 0, leaks.stderr
    assert CLAIMED not in [row["address"] for row in json.loads(leaks.stdout)]
    # The range is full: another pod is refused rather than handed the kept address.
    apply(cluster, ns, launcher("stranger", "node-a", ns, None))
    try:
        said = wait_until("a stranger refused", lambda: refused(cluster, ns, "stranger"), 60)
    except AssertionError as error:
        described = cluster.kubectl("describe", "pod", "-n", ns, "stranger").stdout
        raise AssertionError(f"{error}\n{described}") from None
    assert "all 2 assignable addresses are allocated or reserved" in said[0], said[0]
    delete_pods(cluster, ns, "stranger")
    assert sorted(pool_entries(cluster)) == [CLAIMED, OTHER]

    # The VM starts again: the same address.
    again = run_pod(cluster, ns, launcher("virt-launcher-a-3", "node-a", ns, CLAIM))
    assert attached_ips(again) == [CLAIMED]
    assert f" {CLAIMED}/24 " in shown_in_pod(cluster, ns, "virt-launcher-a-3")
    entry = pool_entries(cluster)[CLAIMED]
    assert (entry["ipamclaimref"], entry["podref"]) == (claim_ref, f"{ns}/virt-launcher-a-3")

    # The VM is deleted: its pod, then its claim. The reconciler frees the address.
    delete_pods(cluster, ns, "virt-launcher-a-3")
    time.sleep(2)
    assert pool_entries(cluster)[CLAIMED]["ipamclaimref"] == claim_ref
    started = time.monotonic()
    cluster.kubectl("delete", "ipamclaim", "-n", ns, CLAIM, "--wait=true")
    wait_until(
        "the claim's address freed",
        lambda: CLAIMED not in pool_entries(cluster) and CLAIMED not in reserved(cluster),
        30,
    )
    took_s = time.monotonic() - started
    print(f"IPAMClaim deleted -> its address freed in the pool and reservation: {took_s:.2f} s")
    assert took_s <= CLAIM_RELEASE_BOUND_S, f"freed after {took_s:.1f}s"
    assert sorted(pool_entries(cluster)) == [OTHER]
    # Now anyone may have it.
    after = run_pod(cluster, ns, launcher("after", "node-b", ns, None))
    assert attached_ips(after) == [CLAIMED]
    assert not pool_entries(cluster)[CLAIMED].get("ipamclaimref")

    delete_pods(cluster, ns, "web", "after")
    cluster.kubectl("delete", "network-attachment-definition", "-n", ns, NETWORK)
    wait_until("the pods' addresses freed", lambda: pool_entries(cluster) == {}, 60)
    assert reserved(cluster) == {}
    assert_check_clean(cluster)
