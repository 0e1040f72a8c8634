"""A pod marked for eviction keeps its address while it still runs.

The eviction API, preemption and the taint manager set DisruptionTarget before
the graceful delete, so the pod answers on its address for up to its grace
period; the reconciler frees the address only once its containers have stopped
or it is gone, so no second pod can get it meanwhile.
"""

from __future__ import annotations

from typing import Any

import pytest

from whereabouts_py.core.allocator import Allocation
from whereabouts_py.daemon.service import IPAMService
from whereabouts_py.reconciler.collector import GarbageCollector
from whereabouts_py_dev.controlplane import ControlPlane

from .harness import Cluster

pytestmark = pytest.mark.kube


def add_request(pod: str) -> dict[str, Any]:
    return {
        "command": "ADD",
        "containerID": f"ctr-{pod}",
        "ifname": "net1",
        "netns": "",
        "args": f"K8S_POD_NAMESPACE=x;K8S_POD_NAME={pod};K8S_POD_UID=uid-{pod}",
        "config": {
            "cniVersion": "1.0.0",
            "name": "evict",
            "type": "macvlan",
            "ipam": {"type": "whereabouts", "range": "10.81.0.0/24"},
        },
    }


def test_running_pod_under_eviction_keeps_its_address_until_it_is_gone(
    control_plane: ControlPlane, namespace: str
) -> None:
    cluster = Cluster(control_plane, namespace)
    uid = cluster.create_pod("victim")
    holder = Allocation("ctr-victim", cluster.podref("victim"), "net1", "node-a", uid)
    cluster.put_entries("10.81.0.0/24", {1: holder})
    # What the eviction API does before the graceful delete: the pod is still Running.
    cluster.set_pod_status(
        "victim",
        {
            "phase": "Running",
            "conditions": [
                {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
            ],
        },
    )
    collector = GarbageCollector(cluster.store, grace_period_s=60.0)
    released = collector.release_for_pods([cluster.podref("victim")])

    service = IPAMService(cluster.store, "node-b", flat_file_reader=lambda _p: {})
    newcomer = service.handle(add_request("newcomer"))["ips"][0]["address"]
    assert not released and newcomer != "10.81.0.1/24", (
        f"the Running (evicting) pod's 10.81.0.1 was released ({[r.verdict for r in released]}) "
        f"and handed to another pod: {newcomer}"
    )
