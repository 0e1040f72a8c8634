"""Releases served from the watched cache: what they cost and why a stale cache is harmless.

Pure logic on ``MemoryStore`` (its ``calls`` count the requests a
``KubeStore`` would send, one per call). The cache is filled as its watches
would fill it, then the store is changed behind its back to make it stale.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import netaddr

from whereabouts_py.core.allocator import Allocation
from whereabouts_py.core.codec import pool_name, reservation_name
from whereabouts_py.core.ownership import PodState
from whereabouts_py.reconciler.cache import PoolCache
from whereabouts_py.reconciler.collector import GarbageCollector
from whereabouts_py.reconciler.operator import PendingPods, PodWatch, run_event_worker
from whereabouts_py.store.memory import MemoryStore

NS = "shop"


def holder(pod: str, uid: str, ifname: str = "net1") -> Allocation:
    return Allocation(f"ctr-{pod}-{ifname}", f"{NS}/{pod}", ifname, node="n1", pod_uid=uid)


def cidr_of(index: int) -> str:
    return f"10.{index // 256}.{index % 256}.0/24"


def add(store: MemoryStore, cidr: str, offset: int, allocation: Allocation) -> None:
    """What a daemon's ADD writes: the pool entry, then its reservation."""
    name = pool_name(cidr)
    snapshot = store.get_pool(name, cidr)
    store.write_pool(snapshot, {**snapshot.allocations, offset: allocation})
    address = netaddr.IPAddress(int(netaddr.IPNetwork(cidr).network) + offset)
    store.create_reservation(reservation_name(address), allocation)


def filled(pools: int, pods_per_pool: int) -> tuple[MemoryStore, dict[str, str]]:
    """``pools`` /24 pools, each with ``pods_per_pool`` live pods holding one address."""
    store = MemoryStore("pools")
    uids: dict[str, str] = {}
    for index in range(pools):
        for slot in range(pods_per_pool):
            pod = f"p{index}-{slot}"
            uids[pod] = f"uid-{pod}"
            store.put_pod(PodState(NS, pod, uids[pod], phase="Running"))
            add(store, cidr_of(index), slot + 1, holder(pod, uids[pod]))
    return store, uids


def watched(store: MemoryStore) -> PoolCache:
    """The cache as its two watches fill it."""
    cache = PoolCache()
    cache.replace_pools(store.list_pools())
    cache.replace_reservations(store.list_reservations())
    return cache


def requests_during(store: MemoryStore, action: object) -> Counter[str]:
    before = Counter(store.calls)
    assert callable(action)
    action()
    return Counter(store.calls) - before


def api_calls(calls: Counter[str]) -> dict[str, int]:
    """The requests that read or free: the best-effort Event is counted apart."""
    return {k: v for k, v in calls.items() if k != "create_event"}


def test_a_deletion_costs_three_requests_per_address_whatever_the_pool_count() -> None:
    for pools in (10, 200):
        store, uids = filled(pools, 3)
        cache = watched(store)
        collector = GarbageCollector(store, grace_period_s=60, cache=cache)
        store.delete_pod(NS, "p7-1")
        # As the DELETED event reports it: the pod with this UID is gone for good.
        deleted = {f"{NS}/p7-1": {uids["p7-1"]}}
        before = Counter(store.calls)
        released = collector.release_for_pods([f"{NS}/p7-1"], deleted)
        calls = Counter(store.calls) - before
        assert len(released) == 1
        # One fresh GET of the pool the index names, one DELETE of the reservation
        # on its cached resourceVersion, one PUT of the pool on the version just read:
        # no listing, no other pool, no pod read (its UID was reported deleted).
        assert api_calls(calls) == {
            "get_pool": 1,
            "delete_reservation": 1,
            "write_pool": 1,
        }, (pools, calls)
        assert calls["create_event"] == 1  # one Event on the IPPool, best effort
        assert 2 not in store.get_pool(pool_name(cidr_of(7)), cidr_of(7)).allocations
        assert reservation_name("10.0.7.2") not in {r.name for r in store.list_reservations()}


def test_without_a_deleted_uid_the_pod_is_read_once() -> None:
    store, _ = filled(30, 2)
    collector = GarbageCollector(store, grace_period_s=60, cache=watched(store))
    store.delete_pod(NS, "p3-0")  # e.g. a finished pod's event, or a retry
    calls = requests_during(store, lambda: collector.release_for_pods([f"{NS}/p3-0"]))
    assert api_calls(calls) == {
        "get_pool": 1,
        "get_pod": 1,
        "delete_reservation": 1,
        "write_pool": 1,
    }


def test_a_pod_with_two_addresses_costs_at_most_three_requests_per_address() -> None:
    store, _ = filled(20, 1)
    store.put_pod(PodState(NS, "multi", "uid-m", phase="Running"))
    add(store, cidr_of(3), 10, holder("multi", "uid-m", "net1"))
    add(store, cidr_of(4), 10, holder("multi", "uid-m", "net2"))
    cache = watched(store)
    collector = GarbageCollector(store, grace_period_s=60, cache=cache)
    store.delete_pod(NS, "multi")
    deleted = {f"{NS}/multi": {"uid-m"}}
    calls = requests_during(store, lambda: collector.release_for_pods([f"{NS}/multi"], deleted))
    api = sum(api_calls(calls).values())
    assert api == 6  # 2 x (pool read + reservation delete + pool write)
    assert api / 2 <= 3
    for index in (3, 4):
        assert 10 not in store.get_pool(pool_name(cidr_of(index)), cidr_of(index)).allocations


def test_a_stale_cached_entry_whose_address_went_to_another_pod_is_never_freed() -> None:
    store, uids = filled(5, 2)
    cache = watched(store)  # sees p2-0 at 10.0.2.1
    collector = GarbageCollector(store, grace_period_s=60, cache=cache)
    # Behind the cache's back: p2-0 is deleted and its address released (say by
    # a sweep of the previous leader), then handed to a new pod.
    store.delete_pod(NS, "p2-0")
    name, cidr = pool_name(cidr_of(2)), cidr_of(2)
    snapshot = store.get_pool(name, cidr)
    store.write_pool(snapshot, {k: v for k, v in snapshot.allocations.items() if k != 1})
    [old] = [r for r in store.list_reservations() if r.name == reservation_name("10.0.2.1")]
    store.delete_reservation(old)
    newcomer = holder("newcomer", "uid-new")
    store.put_pod(PodState(NS, "newcomer", "uid-new", phase="Running"))
    add(store, cidr, 1, newcomer)

    deleted = {f"{NS}/p2-0": {uids["p2-0"]}}
    calls = requests_during(store, lambda: collector.release_for_pods([f"{NS}/p2-0"], deleted))
    assert store.get_pool(name, cidr).allocations[1] == newcomer
    assert store.get_reservation(reservation_name("10.0.2.1")).holder == newcomer  # type: ignore[union-attr]
    # The cache only said where to look: the fresh read shows no entry of p2-0.
    assert api_calls(calls) == {"get_pool": 1}
    assert store.get_pool(name, cidr).allocations[2].podref == f"{NS}/p2-1"


def test_a_stale_cached_reservation_is_only_a_failed_precondition() -> None:
    store, uids = filled(3, 1)
    cache = watched(store)
    collector = GarbageCollector(store, grace_period_s=60, cache=cache)
    # Rewritten since the cache saw it (same holder, new resourceVersion).
    [reservation] = [r for r in store.list_reservations() if r.name == "10.0.1.1"]
    store.update_reservation(reservation, reservation.holder)
    store.delete_pod(NS, "p1-0")
    deleted = {f"{NS}/p1-0": {uids["p1-0"]}}
    calls = requests_during(store, lambda: collector.release_for_pods([f"{NS}/p1-0"], deleted))
    assert store.get_reservation("10.0.1.1") is None
    assert 1 not in store.get_pool(pool_name(cidr_of(1)), cidr_of(1)).allocations
    # The DELETE on the cached version failed (409); a GET and a second DELETE followed.
    assert api_calls(calls) == {
        "get_pool": 1,
        "delete_reservation": 2,
        "get_reservation": 1,
        "write_pool": 1,
    }


def test_a_stale_cached_entry_rewritten_by_a_same_name_successor_is_kept() -> None:
    store, _ = filled(3, 1)
    cache = watched(store)  # sees p1-0 at 10.0.1.1 with the old UID
    collector = GarbageCollector(store, grace_period_s=60, cache=cache)
    store.delete_pod(NS, "p1-0")
    store.put_pod(PodState(NS, "p1-0", "uid-successor", phase="Running"))
    # Its ADD ran in a new sandbox: same pod reference and interface, new container and UID.
    successor = Allocation(
        "ctr-new-sandbox", f"{NS}/p1-0", "net1", node="n1", pod_uid="uid-successor"
    )
    name, cidr = pool_name(cidr_of(1)), cidr_of(1)
    snapshot = store.get_pool(name, cidr)
    store.write_pool(snapshot, {**snapshot.allocations, 1: successor})
    [reservation] = [r for r in store.list_reservations() if r.name == "10.0.1.1"]
    store.update_reservation(reservation, successor)

    # Even told that the old UID was deleted: the entry now carries another UID,
    # so the pod is read, and it is the successor.
    deleted = {f"{NS}/p1-0": {"uid-p1-0"}}
    assert collector.release_for_pods([f"{NS}/p1-0"], deleted) == []
    assert store.get_pool(name, cidr).allocations[1] == successor
    assert store.get_reservation("10.0.1.1").holder == successor  # type: ignore[union-attr]


def test_an_entry_the_cache_has_not_seen_yet_is_left_for_later_not_guessed() -> None:
    store = MemoryStore("pools")
    cache = watched(store)  # empty: the ADD below has not reached the watch
    collector = GarbageCollector(store, grace_period_s=60, cache=cache)
    add(store, cidr_of(0), 1, holder("quick", "uid-q"))
    assert not cache.holds(f"{NS}/quick")
    calls = requests_during(store, lambda: collector.release_for_pods([f"{NS}/quick"]))
    assert sum(calls.values()) == 0  # nothing known, nothing read, nothing written
    cache.replace_pools(store.list_pools())  # the watch catches up
    cache.replace_reservations(store.list_reservations())
    assert cache.holds(f"{NS}/quick")
    assert [r.entry.address for r in collector.release_for_pods([f"{NS}/quick"])] == ["10.0.0.1"]


def test_a_sweep_from_the_cache_lists_only_pods_and_claims() -> None:
    store, _ = filled(50, 2)
    cache = watched(store)
    collector = GarbageCollector(store, grace_period_s=60, cache=cache)
    store.delete_pod(NS, "p9-1")
    before = Counter(store.calls)
    report = collector.sweep()
    calls = Counter(store.calls) - before
    assert [r.entry.address for r in report.released] == ["10.0.9.2"]
    assert calls["list_pools"] == 0 and calls["list_reservations"] == 0
    assert calls["list_pods"] == 1
    assert report.pools == 50 and report.entries == 100


def test_the_index_follows_pool_changes_and_deletions() -> None:
    store, _ = filled(2, 2)
    cache = watched(store)
    assert [p.name for p in cache.pools_holding([f"{NS}/p1-0"])] == ["10.0.1.0-24"]
    name, cidr = pool_name(cidr_of(1)), cidr_of(1)
    snapshot = store.get_pool(name, cidr)
    cache.put_pool(store.write_pool(snapshot, {2: snapshot.allocations[2]}))
    assert not cache.holds(f"{NS}/p1-0") and cache.holds(f"{NS}/p1-1")
    cache.drop_pool(name)
    assert not cache.holds(f"{NS}/p1-1")
    assert cache.counts() == (1, 2, 4)


class Leading:
    leading = True


def test_the_event_worker_looks_again_when_the_watch_was_behind_the_deletion() -> None:
    store = MemoryStore("pools")
    cache = watched(store)  # the pool watch has not delivered the ADD yet
    collector = GarbageCollector(store, grace_period_s=60, cache=cache)
    store.put_pod(PodState(NS, "quick", "uid-q", phase="Running"))
    add(store, cidr_of(0), 1, holder("quick", "uid-q"))
    store.delete_pod(NS, "quick")
    pending = PendingPods()
    stop = threading.Event()
    worker = threading.Thread(
        target=run_event_worker,
        args=(pending, collector, Leading(), stop),  # type: ignore[arg-type]
        kwargs={"lag_s": 0.3},
        daemon=True,
    )
    worker.start()
    try:
        pending.put(f"{NS}/quick", deleted_uid="uid-q")
        time.sleep(0.15)
        assert 1 in store.get_pool(pool_name(cidr_of(0)), cidr_of(0)).allocations
        before = Counter(store.calls)
        cache.replace_pools(store.list_pools())  # the watch catches up
        cache.replace_reservations(store.list_reservations())
        deadline = time.monotonic() + 5
        while 1 in store.get_pool(pool_name(cidr_of(0)), cidr_of(0)).allocations:
            assert time.monotonic() < deadline, "not released on the second look"
            time.sleep(0.02)
    finally:
        stop.set()
        worker.join(5)
    calls = Counter(store.calls) - before
    # The second look still knew the deleted UID: no pod read.
    assert calls["get_pod"] == 0
    assert store.get_reservation("10.0.0.1") is None


def summary(name: str, uid: str, phase: str = "Running", disrupted: bool = False) -> dict[str, Any]:
    """A pod as ``KubeStore.list_pod_summaries_at`` cuts it down."""
    conditions = [{"type": "DisruptionTarget", "status": "True"}] if disrupted else []
    return {
        "metadata": {"namespace": NS, "name": name, "uid": uid},
        "status": {"phase": phase, "conditions": conditions},
    }


def test_the_pod_watch_queues_finished_evicted_and_deleted_pods_and_only_while_leading() -> None:
    pending = PendingPods()
    election = Leading()
    watch = PodWatch(pending, election)  # type: ignore[arg-type]
    watch.listed(
        [
            summary("running", "u1"),
            summary("done", "u2", "Succeeded"),
            summary("evicted", "u3", disrupted=True),
        ]
    )
    assert watch.established.is_set()
    watch.changed(summary("crashed", "u4", "Failed"))
    watch.changed(summary("running", "u1"))
    watch.deleted(summary("gone", "u5"))
    queued, deleted = pending.take_all(timeout_s=0)
    assert set(queued) == {f"{NS}/done", f"{NS}/evicted", f"{NS}/crashed", f"{NS}/gone"}
    # Only a deletion reports a UID that is gone for good.
    assert deleted == {f"{NS}/gone": {"u5"}}

    election.leading = False
    watch.deleted(summary("later", "u6"))
    assert pending.take_all(timeout_s=0) == ({}, {})
