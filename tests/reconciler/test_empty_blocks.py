"""Empty blocks of a large range are deleted with their Leases, safely against a concurrent ADD.

A real daemon serves ADD and DEL through the shim on the local control plane;
the reconciler's block deletion (``GarbageCollector.delete_empty_blocks``, as
its sweep calls it) runs in this process against the same API.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from whereabouts_py.cni.install import install_cni
from whereabouts_py.reconciler.collector import GarbageCollector
from whereabouts_py.store.kube import KubeStore, connect
from whereabouts_py.store.values import pool_lease_name
from whereabouts_py_dev.controlplane import ControlPlane
from whereabouts_py_dev.nodes import SimulatedNodes
from whereabouts_py_dev.runtime import Outcome, invoke, pod_args

BLOCK = "10.140.0.0-26"
CONFIG: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "blocknet",
    "type": "macvlan",
    "ipam": {"type": "whereabouts", "range": "10.140.0.0/22"},
}


def blocks(store: KubeStore) -> dict[str, int]:
    return {pool.name: len(pool.allocations) for pool in store.list_pools()}


def wait_lease_released(store: KubeStore) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lease = store.get_lease(pool_lease_name(BLOCK))
        if lease is None or not lease.holder:
            return
        time.sleep(0.1)
    raise AssertionError(f"the daemon kept the Lease of {BLOCK}")


def test_empty_blocks_go_and_a_racing_add_is_never_lost(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    shim = install_cni(tmp_path / "bin")
    store = KubeStore(connect(str(control_plane.kubeconfig)), namespace)
    collector = GarbageCollector(store, grace_period_s=3600)
    with SimulatedNodes(control_plane, tmp_path / "nodes", ["node-b"], namespace) as nodes:

        def cni(command: str, pod: str) -> Outcome:
            return invoke(
                shim,
                command,
                CONFIG,
                container_id=f"ctr-{pod}",
                ifname="net1",
                netns="/var/run/netns/x",
                args=pod_args(namespace, pod),
                env=nodes["node-b"].environment(),
            )

        assert cni("ADD", "first").addresses() == ["10.140.0.1/22"]
        # A block in use is never deleted, whatever the sweeps.
        for _ in range(2):
            assert collector.delete_empty_blocks(store.list_pools()) == []
        assert blocks(store) == {BLOCK: 1}
        assert cni("DEL", "first").ok
        wait_lease_released(store)
        assert store.get_lease(pool_lease_name(BLOCK)) is not None

        # Empty: the first sweep notes it, the next one (block unchanged) deletes it
        # and its Lease.
        assert collector.delete_empty_blocks(store.list_pools()) == []
        assert collector.delete_empty_blocks(store.list_pools()) == [BLOCK]
        assert blocks(store) == {}
        assert store.get_lease(pool_lease_name(BLOCK)) is None

        # Race: ADDs while deletion runs as fast as it can on the same block.
        deleted = 0
        for round_ in range(6):
            pod = f"racer-{round_}"
            outcome: list[Outcome] = []
            adding = threading.Thread(target=lambda p=pod, into=outcome: into.append(cni("ADD", p)))
            adding.start()
            while adding.is_alive():
                deleted += len(collector.delete_empty_blocks(store.list_pools()))
            adding.join()
            (added,) = outcome
            assert added.ok, added.stdout
            address = added.addresses()[0].split("/")[0]
            pool = store.get_pool(BLOCK, "10.140.0.0/26")
            holders = {holder.podref for holder in pool.allocations.values()}
            assert holders == {f"{namespace}/{pod}"}, (round_, pool.allocations)
            assert store.get_reservation(address) is not None
            assert cni("DEL", pod).ok
            wait_lease_released(store)
            deleted += len(collector.delete_empty_blocks(store.list_pools()))
            deleted += len(collector.delete_empty_blocks(store.list_pools()))
            assert blocks(store) == {}, round_  # deleted again once empty and unclaimed
        assert deleted >= 6
