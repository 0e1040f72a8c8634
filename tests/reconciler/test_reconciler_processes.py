"""Two reconciler replicas: only the leader releases; when it dies, the other takes over."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from whereabouts_py_dev.controlplane import ControlPlane

from .harness import Cluster, start_reconciler, wait_until

pytestmark = pytest.mark.kube

LEASE_S = 3.0


def test_only_the_leader_releases_and_a_follower_takes_over_when_it_dies(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    cluster = Cluster(control_plane, namespace)
    cidr = "10.130.0.0/24"
    first_uid = cluster.create_pod("first")
    second_uid = cluster.create_pod("second")
    cluster.put_entries(
        cidr, {1: cluster.holder("first", first_uid), 2: cluster.holder("second", second_uid)}
    )
    replicas = [
        start_reconciler(control_plane, namespace, tmp_path, identity, lease_duration_s=LEASE_S)
        for identity in ("rec-a", "rec-b")
    ]
    try:
        for replica in replicas:
            replica.wait_for("pod watch established")
        wait_until(lambda: any(r.count("became leader") for r in replicas), 30, "a leader elected")
        leader, follower = sorted(replicas, key=lambda r: -r.count("became leader"))
        leader.wait_for("sweep finished")
        time.sleep(LEASE_S)  # the follower sees the leader renew, and stays a follower
        assert follower.count("became leader") == 0

        cluster.delete_pod("first")
        wait_until(lambda: 1 not in cluster.pool(cidr).allocations, 10, "release by the leader")
        assert leader.count("released address=10.130.0.1 ") == 1
        assert follower.count("released address=") == 0

        leader.kill()
        killed_at = time.monotonic()
        cluster.delete_pod("second")
        took = wait_until(
            lambda: 2 not in cluster.pool(cidr).allocations,
            LEASE_S + 15,
            "release by the follower after the leader died",
        )
        print(f"\nleader killed -> next deleted pod's address released in {took:.1f} s")
        assert follower.count("became leader") == 1
        assert follower.count("released address=10.130.0.2 ") == 1
        # Not before the Lease ran out (less at most one renew interval, LEASE_S / 5).
        assert time.monotonic() - killed_at >= LEASE_S * 0.75
        assert cluster.reservations().keys() & {"10.130.0.1", "10.130.0.2"} == set()
        assert follower.metrics()["whereabouts_reconciler_leader{}"] == 1
        assert follower.metrics()["whereabouts_reconciler_lease_acquisitions_total{}"] == 1
    finally:
        for replica in replicas:
            replica.stop()
