"""Full sweeps: at startup, what live pods keep, the grace period, reservation repair.

Pools and reservations are written directly in the Go project's format (with
our ``poduid``), which lets each test set up exactly the state it needs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from whereabouts_py.core.allocator import Allocation
from whereabouts_py_dev.controlplane import ControlPlane

from .harness import Cluster, Reconciler, running_reconciler, start_reconciler, wait_until

pytestmark = pytest.mark.kube

SWEEP_INTERVAL_S = 1.0
GRACE_S = 5.0


@pytest.fixture(scope="module")
def sweeper(
    control_plane: ControlPlane,
    module_namespace: str,
    cluster: Cluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Reconciler]:
    """A reconciler that sweeps every second, with a short grace period."""
    with running_reconciler(
        control_plane,
        module_namespace,
        tmp_path_factory.mktemp("sweeper"),
        sweep_interval_s=SWEEP_INTERVAL_S,
        grace_period_s=GRACE_S,
    ) as running:
        yield running


def status_listing(*ips: str) -> list[dict[str, object]]:
    return [
        {"name": "cbr0", "interface": "eth0", "ips": ["10.244.0.9"], "default": True},
        {"name": "default/storage", "interface": "net1", "ips": list(ips)},
    ]


def test_the_startup_sweep_releases_pods_deleted_while_no_reconciler_ran(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    cluster = Cluster(control_plane, namespace)
    cidr = "10.120.0.0/24"
    uids = {name: cluster.create_pod(name) for name in ("gone-1", "gone-2", "gone-3", "stays")}
    cluster.put_entries(
        cidr, {i + 1: cluster.holder(name, uid) for i, (name, uid) in enumerate(uids.items())}
    )
    with running_reconciler(control_plane, namespace, tmp_path, "rec-first"):
        pass  # started, swept (everything alive), stopped
    for name in ("gone-1", "gone-2", "gone-3"):
        cluster.delete_pod(name)
    time.sleep(0.5)
    assert set(cluster.pool(cidr).allocations) == {1, 2, 3, 4}  # nobody released them

    reconciler = start_reconciler(control_plane, namespace, tmp_path, "rec-second")
    try:
        reconciler.wait_for("sweep finished")
        assert set(cluster.pool(cidr).allocations) == {4}
        assert set(cluster.reservations()) == {"10.120.0.4"}
        assert reconciler.count("reason=pod_deleted") == 3
    finally:
        reconciler.stop()


def test_live_pods_keep_their_addresses_and_a_contradicted_one_goes_only_after_the_grace_period(
    cluster: Cluster, sweeper: Reconciler
) -> None:
    cidr = "10.121.0.0/24"
    listed = cluster.create_pod("listed", network_status=status_listing("10.121.0.1"))
    silent = cluster.create_pod("silent")  # IPAM without Multus: no network-status at all
    stale = cluster.create_pod("stale", network_status=status_listing("10.121.0.99"))
    written_at = time.monotonic()
    cluster.put_entries(
        cidr,
        {
            1: cluster.holder("listed", listed),
            2: cluster.holder("silent", silent),
            3: cluster.holder("stale", stale),
        },
    )
    sweeps = sweeper.count("sweep finished")
    sweeper.wait_for("sweep finished", count=sweeps + 2, timeout_s=GRACE_S)
    assert time.monotonic() - written_at < GRACE_S
    assert set(cluster.pool(cidr).allocations) == {1, 2, 3}  # not before the grace period

    wait_until(
        lambda: set(cluster.pool(cidr).allocations) == {1, 2},
        timeout_s=GRACE_S + 20,
        what="release of the contradicted address",
    )
    assert time.monotonic() - written_at >= GRACE_S
    assert "10.121.0.3" not in cluster.reservations()
    assert sweeper.count("address=10.121.0.3 pool=10.121.0.0-24") == 1
    assert "reason=not_in_network_status" in sweeper.text()
    wait_until(  # the Event follows the release
        lambda: (
            "stale" in {e.involved_object.name for e in cluster.events("IPAddressGarbageCollected")}
        ),
        timeout_s=10,
        what="the release Event on the pod",
    )

    # Sweeps go on; the live pods keep their addresses.
    sweeps = sweeper.count("sweep finished")
    sweeper.wait_for("sweep finished", count=sweeps + 3)
    assert set(cluster.pool(cidr).allocations) == {1, 2}
    assert {"10.121.0.1", "10.121.0.2"} <= set(cluster.reservations())
    samples = sweeper.metrics()
    assert samples['whereabouts_gc_releases_total{reason="not_in_network_status"}'] >= 1
    labels = 'network="",pool="10.121.0.0-24",range="10.121.0.0/24"'
    assert samples[f"whereabouts_pool_allocated{{{labels}}}"] == 2
    assert samples[f"whereabouts_pool_size{{{labels}}}"] == 254
    assert samples[f"whereabouts_pool_objects{{{labels}}}"] == 1
    assert samples["whereabouts_reconciler_leader{}"] == 1


def test_orphan_reservations_are_deleted_and_missing_ones_recreated(
    cluster: Cluster, sweeper: Reconciler
) -> None:
    ghost = Allocation("ctr-ghost", cluster.podref("ghost"), "net1")
    keeper_uid = cluster.create_pod("keeper")
    keeper = cluster.holder("keeper", keeper_uid)
    blue_uid = cluster.create_pod("blue-keeper")
    blue = cluster.holder("blue-keeper", blue_uid)
    cluster.store.create_reservation("10.122.0.77", ghost)  # no pool entry holds it
    cluster.put_entries("10.122.1.0/24", {5: keeper}, reserve=False)
    cluster.put_entries("10.122.2.0/24", {5: blue}, network_name="blue", reserve=False)

    wait_until(
        lambda: "10.122.0.77" not in cluster.reservations(),
        timeout_s=GRACE_S + 20,
        what="deletion of the orphan reservation",
    )
    wait_until(
        lambda: {"10.122.1.5", "blue-10.122.2.5"} <= set(cluster.reservations()),
        timeout_s=GRACE_S + 20,
        what="recreation of the missing reservations",
    )
    reservations = cluster.reservations()
    assert (reservations["10.122.1.5"].podref, reservations["10.122.1.5"].pod_uid) == (
        keeper.podref,
        keeper_uid,
    )
    assert reservations["blue-10.122.2.5"].podref == blue.podref
    assert cluster.pool("10.122.1.0/24").allocations == {5: keeper}  # nothing released
    samples = sweeper.metrics()
    assert samples['whereabouts_reservation_repairs_total{action="deleted"}'] >= 1
    assert samples['whereabouts_reservation_repairs_total{action="created"}'] >= 2


def test_an_address_held_by_two_live_pods_is_reported_and_never_released(
    cluster: Cluster, sweeper: Reconciler
) -> None:
    alpha = cluster.holder("alpha", cluster.create_pod("alpha"))
    beta = cluster.holder("beta", cluster.create_pod("beta"))
    # Overlapping ranges: beta holds 10.123.0.5 with its reservation; alpha's
    # entry for the same address in the wider range has none (a duplicate).
    cluster.put_entries("10.123.0.0/25", {5: beta})
    cluster.put_entries("10.123.0.0/24", {5: alpha}, reserve=False)

    wait_until(
        lambda: any(
            event.involved_object.name == "alpha" for event in cluster.events("IPAddressConflict")
        ),
        timeout_s=GRACE_S + 20,
        what="a conflict Event on the pod",
    )
    assert sweeper.metrics()["whereabouts_address_conflicts{}"] >= 1
    assert cluster.pool("10.123.0.0/24").allocations == {5: alpha}
    assert cluster.pool("10.123.0.0/25").allocations == {5: beta}
    assert cluster.reservations()["10.123.0.5"] == beta
