"""The event path: pod deletions, finished and evicted pods, same-name recreation.

One reconciler serves the whole module, with a sweep interval long enough
that every release seen here comes from a pod event, not from a sweep.
Allocations are made through the real shim and a real node daemon.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from whereabouts_py.cni.install import install_cni
from whereabouts_py.reconciler.collector import GarbageCollector
from whereabouts_py.store.kube import KubeStore, connect
from whereabouts_py_dev.controlplane import ControlPlane
from whereabouts_py_dev.nodes import SimulatedNodes
from whereabouts_py_dev.runtime import invoke, pod_args

from .harness import Cluster, Reconciler, running_reconciler, wait_until

pytestmark = pytest.mark.kube

RELEASE_BOUND_S = 5.0
RELEASED_EVENT = "IPAddressGarbageCollected"


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_cni(tmp_path_factory.mktemp("cni-bin"))


@pytest.fixture(scope="module")
def node(
    control_plane: ControlPlane, module_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimulatedNodes]:
    directory = tmp_path_factory.mktemp("nodes")
    with SimulatedNodes(control_plane, directory, ["node-a"], module_namespace) as nodes:
        yield nodes


@pytest.fixture(scope="module")
def reconciler(
    control_plane: ControlPlane,
    module_namespace: str,
    cluster: Cluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Reconciler]:
    # A long lease: the same-name test pauses the process for a moment.
    with running_reconciler(
        control_plane,
        module_namespace,
        tmp_path_factory.mktemp("reconciler"),
        sweep_interval_s=300,
        lease_duration_s=30,
    ) as running:
        yield running


def network(name: str, cidr: str, network_name: str | None = None) -> dict[str, Any]:
    ipam: dict[str, Any] = {"type": "whereabouts", "range": cidr}
    if network_name:
        ipam["network_name"] = network_name
    return {"cniVersion": "1.0.0", "name": name, "type": "macvlan", "ipam": ipam}


def cni_add(
    shim: Path,
    nodes: SimulatedNodes,
    cluster: Cluster,
    config: dict[str, Any],
    pod: str,
    *,
    uid: str,
    ifname: str = "net1",
    container: str | None = None,
) -> str:
    outcome = invoke(
        shim,
        "ADD",
        config,
        container_id=container or f"ctr-{pod}",
        ifname=ifname,
        netns=f"/var/run/netns/{pod}",
        args=pod_args(cluster.namespace, pod, uid=uid),
        env=nodes["node-a"].environment(),
    )
    assert outcome.ok, outcome.stdout + outcome.stderr
    [address] = outcome.addresses()
    return address.split("/")[0]


def test_deleting_a_pod_releases_its_addresses_on_two_networks_within_seconds(
    shim: Path, node: SimulatedNodes, cluster: Cluster, reconciler: Reconciler
) -> None:
    storage = network("storage", "10.110.0.0/24")
    backend = network("backend", "10.110.0.0/24", network_name="backend")
    uid = cluster.create_pod("two-nets")
    first = cni_add(shim, node, cluster, storage, "two-nets", uid=uid, ifname="net1")
    second = cni_add(shim, node, cluster, backend, "two-nets", uid=uid, ifname="net2")
    assert first == second == "10.110.0.1"  # independent networks
    assert {"10.110.0.1", "backend-10.110.0.1"} <= set(cluster.reservations())

    deleted_at = time.monotonic()
    cluster.delete_pod("two-nets")

    def released() -> bool:
        reservations = cluster.reservations()
        return (
            not cluster.pool("10.110.0.0/24").allocations
            and not cluster.pool("10.110.0.0/24", "backend").allocations
            and "10.110.0.1" not in reservations
            and "backend-10.110.0.1" not in reservations
        )

    wait_until(released, timeout_s=30, what="release after pod deletion")
    elapsed = time.monotonic() - deleted_at
    print(f"\nrelease of 2 addresses after pod deletion: {elapsed * 1000:.0f} ms")
    assert elapsed < RELEASE_BOUND_S
    assert reconciler.count("reason=pod_deleted") >= 2
    assert reconciler.metrics()['whereabouts_gc_releases_total{reason="pod_deleted"}'] >= 2
    # The Events follow the releases (posted after them, a few at a time).
    wanted = {"10.110.0.0-24", "backend-10.110.0.0-24"}
    wait_until(
        lambda: wanted <= {e.involved_object.name for e in cluster.events(RELEASED_EVENT)},
        timeout_s=10,
        what="the release Events on both pools",
    )


def test_finished_and_evicted_pods_release_their_addresses(
    cluster: Cluster, reconciler: Reconciler
) -> None:
    cidr = "10.111.0.0/24"
    uids = {name: cluster.create_pod(name) for name in ("done", "crashed", "evicted", "running")}
    cluster.put_entries(
        cidr, {i + 1: cluster.holder(name, uid) for i, (name, uid) in enumerate(uids.items())}
    )
    cluster.set_pod_status("done", {"phase": "Succeeded"})
    cluster.set_pod_status("crashed", {"phase": "Failed"})
    # Evicted, and the kubelet has stopped its containers (the object lingers).
    cluster.set_pod_status(
        "evicted",
        {
            "phase": "Running",
            "conditions": [
                {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
            ],
            "containerStatuses": [
                {
                    "name": "app",
                    "image": "pause",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": 137, "reason": "Error"}},
                }
            ],
        },
    )
    cluster.set_pod_status("running", {"phase": "Running"})

    wait_until(
        lambda: set(cluster.pool(cidr).allocations) == {4},
        timeout_s=15,
        what="release of finished and evicted pods",
    )
    assert set(cluster.reservations()) & {"10.111.0.1", "10.111.0.2", "10.111.0.3"} == set()
    assert "10.111.0.4" in cluster.reservations()
    assert reconciler.count("reason=pod_finished") >= 2
    assert reconciler.count("reason=pod_disrupted") >= 1
    # The pods still exist: the Events are on them (posted just after the releases).
    wait_until(
        lambda: (
            {"done", "crashed", "evicted"}
            <= {e.involved_object.name for e in cluster.events(RELEASED_EVENT)}
        ),
        timeout_s=10,
        what="the release Events on the pods",
    )
    # kopf keeps no state on pods: no finalizer, no annotation, no status of its own.
    for name in uids:
        pod = cluster.core.read_namespaced_pod(name, cluster.namespace)
        assert not pod.metadata.finalizers
        assert not pod.metadata.annotations
        managers = {entry.manager for entry in pod.metadata.managed_fields or []}
        assert managers == {"OpenAPI-Generator"}  # only this test's own client wrote it


def test_a_late_deletion_event_of_the_old_pod_keeps_the_address_of_its_same_name_successor(
    shim: Path, node: SimulatedNodes, cluster: Cluster, reconciler: Reconciler
) -> None:
    config = network("web", "10.112.0.0/24")
    old_uid = cluster.create_pod("web-0")
    address = cni_add(shim, node, cluster, config, "web-0", uid=old_uid, container="sandbox-old")

    # The reconciler is paused, so the old pod's deletion reaches it only after
    # the successor exists and its ADD re-recorded the address with the new UID.
    os.kill(reconciler.process.pid, signal.SIGSTOP)
    try:
        cluster.delete_pod("web-0")
        new_uid = cluster.create_pod("web-0")
        again = cni_add(shim, node, cluster, config, "web-0", uid=new_uid, container="sandbox-new")
    finally:
        os.kill(reconciler.process.pid, signal.SIGCONT)
    assert again == address
    assert cluster.pool("10.112.0.0/24").allocations[1].pod_uid == new_uid

    reconciler.wait_for(f"kept address={address} pool=10.112.0.0-24 pod={cluster.podref('web-0')}")
    [holder] = cluster.pool("10.112.0.0/24").allocations.values()
    assert (holder.pod_uid, holder.container_id) == (new_uid, "sandbox-new")
    assert cluster.reservations()[address].container_id == "sandbox-new"
    assert f"released address={address}" not in reconciler.text()


def test_the_old_pods_deletion_processed_directly_keeps_the_successors_address(
    control_plane: ControlPlane, cluster: Cluster, reconciler: Reconciler
) -> None:
    """The same decision, driven in-process against the real API, without timing."""
    cidr = "10.113.0.0/24"
    old_uid = cluster.create_pod("db-0")
    cluster.put_entries(cidr, {1: cluster.holder("db-0", old_uid)})
    os.kill(reconciler.process.pid, signal.SIGSTOP)
    try:
        cluster.delete_pod("db-0")
        new_uid = cluster.create_pod("db-0")
        # What the successor's ADD does: same pod reference and interface, new UID.
        cluster.put_entries(cidr, {1: cluster.holder("db-0", new_uid)}, reserve=False)
        collector = GarbageCollector(
            KubeStore(connect(str(control_plane.kubeconfig)), cluster.namespace),
            grace_period_s=60,
        )
        assert collector.release_for_pods([cluster.podref("db-0")]) == []
    finally:
        os.kill(reconciler.process.pid, signal.SIGCONT)
    assert cluster.pool(cidr).allocations[1].pod_uid == new_uid
