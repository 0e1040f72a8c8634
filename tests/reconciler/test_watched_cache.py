"""The watched caches against the real apiserver, and what a pod deletion costs there.

The cache threads run in-process here (``watch_threads`` on a ``KubeStore``);
the last test runs the reconciler as its process and reads the
apiserver's own ``apiserver_request_total`` before and after one deletion.
"""

from __future__ import annotations

import re
import ssl
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from whereabouts_py.reconciler.cache import PoolCache, run_watch, watch_threads
from whereabouts_py.reconciler.collector import GarbageCollector
from whereabouts_py.store.kube import KubeStore, WatchEvent, connect
from whereabouts_py_dev.controlplane import ControlPlane

from .harness import Cluster, new_namespace, running_reconciler, wait_until

pytestmark = pytest.mark.kube


@pytest.fixture
def cluster(control_plane: ControlPlane) -> Cluster:
    found = Cluster(control_plane, new_namespace(control_plane))
    found.create_pod("sentinel")  # kopf reports its watch established with a first pod
    return found


@pytest.fixture
def watched(cluster: Cluster) -> Iterator[PoolCache]:
    cache = PoolCache()
    stop = threading.Event()
    threads = watch_threads(cluster.store, cache, stop)
    for thread in threads:
        thread.start()
    try:
        assert cache.pools_synced.wait(30) and cache.reservations_synced.wait(30)
        yield cache
    finally:
        stop.set()


class CountingTransport:
    """Counts a KubeStore's HTTP requests by method and collection, then sends them."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.requests: Counter[str] = Counter()

    def __call__(self, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        after = path.split("?", 1)[0].split("/namespaces/", 1)[-1].split("/")
        self.requests[f"{method} {after[1] if len(after) > 1 else path}"] += 1
        return self.inner(method, path, *args, **kwargs)

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.stream(*args, **kwargs)


def counting_store(plane: ControlPlane, namespace: str) -> tuple[KubeStore, CountingTransport]:
    store = KubeStore(connect(str(plane.kubeconfig)), namespace)
    counting = CountingTransport(store._call)
    store._call = counting  # type: ignore[assignment]
    return store, counting


def test_the_caches_follow_pools_and_reservations_as_they_change(
    cluster: Cluster, watched: PoolCache
) -> None:
    uid = cluster.create_pod("web-0")
    name = cluster.put_entries("10.150.0.0/24", {1: cluster.holder("web-0", uid)})
    wait_until(lambda: watched.holds(cluster.podref("web-0")), 10, "the pool's ADDED event")
    wait_until(lambda: watched.reservation("10.150.0.1") is not None, 10, "the reservation's event")
    other = cluster.create_pod("web-1")
    cluster.put_entries("10.150.0.0/24", {2: cluster.holder("web-1", other)})
    wait_until(lambda: watched.holds(cluster.podref("web-1")), 10, "the pool's MODIFIED event")
    [pool] = watched.pools_holding([cluster.podref("web-0"), cluster.podref("web-1")])
    assert pool.name == name and set(pool.allocations) == {1, 2}
    assert pool.resource_version == cluster.pool("10.150.0.0/24").resource_version

    snapshot = cluster.pool("10.150.0.0/24")
    assert cluster.store.delete_pool(snapshot)
    reservation = cluster.store.get_reservation("10.150.0.1")
    assert reservation is not None and cluster.store.delete_reservation(reservation)
    wait_until(
        lambda: not watched.holds(cluster.podref("web-0")) and watched.pool(name) is None,
        10,
        "the pool's DELETED event",
    )
    wait_until(lambda: watched.reservation("10.150.0.1") is None, 10, "the reservation's DELETE")


def test_a_watch_from_compacted_history_expires_and_the_collection_is_listed_again(
    cluster: Cluster,
) -> None:
    store = cluster.store
    # Enough writes that the apiserver's watch cache no longer holds version 1.
    for offset in range(1, 120):
        uid = f"uid-{offset}"
        cluster.put_entries(
            "10.151.0.0/24", {offset: cluster.holder(f"p{offset}", uid)}, reserve=False
        )
    events = list(store.watch_pools("1", timeout_s=5))
    assert [event.kind for event in events] == ["EXPIRED"]

    listings: list[int] = []
    seen: list[str] = []
    stop = threading.Event()
    first = [True]

    def list_at() -> tuple[list[object], str]:
        pools, version = store.list_pools_at()
        listings.append(len(pools))
        return list(pools), version

    def watch(version: str, timeout_s: float) -> Iterator[WatchEvent[object]]:
        if first[0]:  # the first watch starts from a version that is long gone
            first[0] = False
            return iter(store.watch_pools("1", timeout_s))  # type: ignore[arg-type]
        stop.set()
        return iter([])

    run_watch(
        "IPPools",
        list_at=list_at,
        watch=watch,
        replace=lambda items: seen.append("replace"),
        put=lambda item: seen.append("put"),
        drop=lambda item: seen.append("drop"),
        stop=stop,
    )
    assert listings == [1, 1]  # listed, expired, listed again
    assert seen == ["replace", "replace"]


def test_a_deletion_served_from_the_cache_sends_three_requests_whatever_the_pool_count(
    cluster: Cluster, watched: PoolCache
) -> None:
    uids = {}
    for index in range(40):
        pod = f"p{index}"
        uids[pod] = cluster.create_pod(pod)
        cluster.put_entries(f"10.152.{index}.0/24", {1: cluster.holder(pod, uids[pod])})
    wait_until(lambda: watched.counts()[0] == 40 and watched.counts()[2] == 40, 20, "cache")
    store, counting = counting_store(cluster.plane, cluster.namespace)
    collector = GarbageCollector(store, grace_period_s=60, cache=watched)
    cluster.delete_pod("p17")
    released = collector.release_for_pods(
        [cluster.podref("p17")], {cluster.podref("p17"): {uids["p17"]}}
    )
    assert [item.entry.address for item in released] == ["10.152.17.1"]
    assert dict(counting.requests) == {
        "GET ippools": 1,
        "DELETE overlappingrangeipreservations": 1,
        "PUT ippools": 1,
        "POST events": 1,  # the IPAddressGarbageCollected Event, best effort
    }
    assert cluster.pool("10.152.17.0/24").allocations == {}


def apiserver_requests(plane: ControlPlane) -> Counter[tuple[str, str]]:
    """The apiserver's own count of requests, by (resource, verb)."""
    context = ssl.create_default_context(cafile=str(plane.ca_file))
    context.check_hostname = False
    request = urllib.request.Request(f"{plane.server}/metrics")
    request.add_header("Authorization", f"Bearer {plane.token()}")
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:
        text = answer.read().decode()
    counts: Counter[tuple[str, str]] = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        counts[(labels.get("resource", ""), labels.get("verb", ""))] += int(
            float(line.rsplit(" ", 1)[1])
        )
    return counts


def test_the_reconciler_frees_a_deleted_pods_address_without_listing_any_pool(
    control_plane: ControlPlane, cluster: Cluster, tmp_path: Path
) -> None:
    uids = {}
    for index in range(60):
        pod = f"q{index}"
        uids[pod] = cluster.create_pod(pod)
        cluster.put_entries(f"10.153.{index}.0/24", {1: cluster.holder(pod, uids[pod])})
    with running_reconciler(control_plane, cluster.namespace, tmp_path) as reconciler:
        before = apiserver_requests(control_plane)
        cluster.core.delete_namespaced_pod("q33", cluster.namespace, grace_period_seconds=0)
        reconciler.wait_for("released address=10.153.33.1", timeout_s=10)
        after = apiserver_requests(control_plane)
    ours = {"ippools", "overlappingrangeipreservations"}
    delta = {
        key: after[key] - before[key]
        for key in after
        if key[0] in ours and after[key] != before[key]
    }
    assert delta == {
        ("ippools", "GET"): 1,
        ("ippools", "PUT"): 1,
        ("overlappingrangeipreservations", "DELETE"): 1,
    }
    assert cluster.pool("10.153.33.0/24").allocations == {}
    assert "10.153.33.1" not in cluster.reservations()
    assert cluster.pool("10.153.32.0/24").allocations[1].podref == cluster.podref("q32")
