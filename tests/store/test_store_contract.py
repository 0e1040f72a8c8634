"""One contract, two stores: the in-memory twin behaves as the Kubernetes API does.

Every case runs against ``MemoryStore`` and against ``KubeStore`` on the
local control plane, so the twin that fast tests use cannot drift from the
real thing.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from whereabouts_py.core.allocator import Allocation
from whereabouts_py.core.claims import ClaimState
from whereabouts_py.core.ownership import PodState
from whereabouts_py.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidNameError,
    NotFoundError,
    StoreError,
)
from whereabouts_py.store.base import Store
from whereabouts_py.store.kube import KubeStore, connect
from whereabouts_py.store.memory import MemoryStore
from whereabouts_py.store.values import ObjectRef, PoolSnapshot

A = Allocation("c-1", "ns/pod-a", "net1", node="node-a", pod_uid="uid-a")
B = Allocation("c-2", "ns/pod-b", "net1", node="node-b")
GO_MADE = Allocation("", "ns/pod-go", "net1")


@dataclass
class Backend:
    store: Store
    # Makes a pod as the API would report it: (namespace, name, node) -> uid.
    make_pod: Callable[[str, str, str], str]
    # Makes an IPAMClaim as KubeVirt would: (namespace, name, network, interface).
    make_claim: Callable[[str, str, str, str], None]
    # Deletes an IPAMClaim: (namespace, name).
    delete_claim: Callable[[str, str], None]


def _memory() -> Backend:
    store = MemoryStore("pools")

    def make_pod(namespace: str, name: str, node: str) -> str:
        uid = str(uuid.uuid4())
        store.put_pod(PodState(namespace=namespace, name=name, uid=uid, node=node))
        return uid

    def make_claim(namespace: str, name: str, network: str, interface: str) -> None:
        store.put_ipam_claim(ClaimState(namespace, name, network, interface))

    return Backend(store, make_pod, make_claim, store.delete_ipam_claim)


@pytest.fixture(params=["memory", pytest.param("kube", marks=pytest.mark.kube)])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        yield _memory()
        return
    plane = request.getfixturevalue("control_plane")
    namespace = f"s-{uuid.uuid4().hex[:10]}"
    plane.kubectl("create", "namespace", namespace)
    api = connect(str(plane.kubeconfig))

    def make_pod(pod_namespace: str, name: str, node: str) -> str:
        existing = plane.kubectl("get", "namespace", pod_namespace, check=False)
        if existing.returncode != 0:
            plane.kubectl("create", "namespace", pod_namespace)
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": pod_namespace},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "pause"}]},
        }
        made = plane.kubectl(
            "create", "-f", "-", "-o", "json", input_text=json.dumps(manifest)
        ).stdout
        return str(json.loads(made)["metadata"]["uid"])

    def make_claim(claim_namespace: str, name: str, network: str, interface: str) -> None:
        if plane.kubectl("get", "namespace", claim_namespace, check=False).returncode != 0:
            plane.kubectl("create", "namespace", claim_namespace)
        manifest = {
            "apiVersion": "k8s.cni.cncf.io/v1alpha1",
            "kind": "IPAMClaim",
            "metadata": {"name": name, "namespace": claim_namespace},
            "spec": {"network": network, "interface": interface},
        }
        plane.kubectl("create", "-f", "-", input_text=json.dumps(manifest))

    def delete_claim(claim_namespace: str, name: str) -> None:
        plane.kubectl("delete", "ipamclaim", "-n", claim_namespace, name, "--wait=true")

    try:
        yield Backend(KubeStore(api, namespace), make_pod, make_claim, delete_claim)
    finally:
        api.close()


def test_a_missing_pool_reads_empty_and_is_created_once(backend: Backend) -> None:
    store = backend.store
    empty = store.get_pool("10.1.0.0-24", "10.1.0.0/24")
    assert (empty.allocations, empty.resource_version) == ({}, None)
    made = store.write_pool(empty, {5: A}, annotations={"example.org/why": "test"}, network="n")
    assert made.resource_version is not None
    assert made.allocations == {5: A}
    assert made.status == {
        "size": 254,
        "allocated": 1,
        "free": 253,
        "usedPercent": 0,
        "network": "n",
    }
    with pytest.raises(AlreadyExistsError):
        store.write_pool(empty, {6: B})
    again = store.get_pool("10.1.0.0-24", "10.1.0.0/24")
    assert again == made
    assert again.metadata["annotations"] == {"example.org/why": "test"}


def test_pool_writes_are_compare_and_swap_and_keep_metadata(backend: Backend) -> None:
    store = backend.store
    first = store.write_pool(store.get_pool("10.2.0.0-29", "10.2.0.0/29"), {1: A})
    second = store.write_pool(first, {1: A, 2: B})
    assert second.resource_version != first.resource_version
    with pytest.raises(ConflictError):
        store.write_pool(first, {3: B})  # read before the second write
    assert store.get_pool("10.2.0.0-29", "10.2.0.0/29").allocations == {1: A, 2: B}
    emptied = store.write_pool(second, {})
    assert emptied.allocations == {}
    assert emptied.status["allocated"] == 0 and emptied.status["free"] == 6


def test_pools_and_leases_are_deleted_only_as_read(backend: Backend) -> None:
    store = backend.store
    first = store.write_pool(store.get_pool("10.5.0.0-26", "10.5.0.0/26"), {})
    newer = store.write_pool(first, {1: A})
    with pytest.raises(ConflictError):
        store.delete_pool(first)  # an ADD wrote meanwhile: the pool stays
    assert store.get_pool("10.5.0.0-26", "10.5.0.0/26").allocations == {1: A}
    emptied = store.write_pool(newer, {})
    assert store.delete_pool(emptied) is True
    gone = store.get_pool("10.5.0.0-26", "10.5.0.0/26")
    assert (gone.allocations, gone.resource_version) == ({}, None)
    assert store.delete_pool(emptied) is False  # already gone
    assert [p.name for p in store.list_pools()] == []
    # A writer that read the pool before the delete cannot bring it back by update: it
    # loses as it would lose any compare-and-swap, reads again and creates it.
    with pytest.raises(ConflictError):
        store.write_pool(emptied, {2: B})
    assert store.write_pool(gone, {2: B}).allocations == {2: B}  # it is created anew

    taken = store.write_lease(None, "whereabouts-py-pool-10.5.0.0-26", "node-a", 10)
    renewed = store.write_lease(taken, taken.name, "node-a", 10)
    with pytest.raises(ConflictError):
        store.delete_lease(taken)  # renewed since
    assert store.delete_lease(renewed) is True
    assert store.get_lease(taken.name) is None
    assert store.delete_lease(renewed) is False


def test_pools_are_listed(backend: Backend) -> None:
    store = backend.store
    for name, cidr in (("10.3.0.0-30", "10.3.0.0/30"), ("fd00---126", "fd00::/126")):
        store.write_pool(PoolSnapshot(name, cidr, {}, None), {1: A})
    listed = {pool.name: pool.cidr for pool in store.list_pools()}
    assert listed == {"10.3.0.0-30": "10.3.0.0/30", "fd00---126": "fd00::/126"}


def test_reservations_claim_an_address_once_and_delete_by_version(backend: Backend) -> None:
    store = backend.store
    assert store.get_reservation("10.4.0.7") is None
    made = store.create_reservation("10.4.0.7", A)
    assert made.holder.podref == "ns/pod-a" and made.holder.container_id == "c-1"
    with pytest.raises(AlreadyExistsError):
        store.create_reservation("10.4.0.7", B)
    moved = store.update_reservation(made, B)
    assert moved.holder.podref == "ns/pod-b"
    with pytest.raises(ConflictError):
        store.update_reservation(made, A)  # stale
    with pytest.raises(ConflictError):
        store.delete_reservation(made)  # stale: the holder changed since
    assert [r.name for r in store.list_reservations()] == ["10.4.0.7"]
    assert store.delete_reservation(moved) is True
    assert store.delete_reservation(moved) is False
    assert store.get_reservation("10.4.0.7") is None


def test_a_reservation_without_container_id_reads_back_as_written(backend: Backend) -> None:
    made = backend.store.create_reservation("10.4.0.8", GO_MADE)
    read = backend.store.get_reservation("10.4.0.8")
    assert read is not None and read.holder == made.holder
    assert (read.holder.podref, read.holder.ifname) == ("ns/pod-go", "net1")


def test_leases_are_taken_renewed_and_given_up_by_compare_and_swap(backend: Backend) -> None:
    store = backend.store
    assert store.get_lease("pool-x") is None
    taken = store.write_lease(None, "pool-x", "node-a", 2.4)
    assert (taken.holder, taken.duration_s) == ("node-a", 2.0)
    assert taken.renewed is not None
    assert abs((dt.datetime.now(dt.UTC) - taken.renewed).total_seconds()) < 30
    assert taken.held_by_other("node-b", taken.renewed + dt.timedelta(seconds=1))
    assert not taken.held_by_other("node-b", taken.renewed + dt.timedelta(seconds=3))
    assert not taken.held_by_other("node-a", taken.renewed)
    with pytest.raises(AlreadyExistsError):
        store.write_lease(None, "pool-x", "node-b", 2.0)
    renewed = store.write_lease(taken, "pool-x", "node-a", 2.0)
    with pytest.raises(ConflictError):
        store.write_lease(taken, "pool-x", "node-b", 2.0)  # stale
    released = store.write_lease(renewed, "pool-x", "", 2.0)
    assert released.holder == ""
    assert not released.held_by_other("node-b", dt.datetime.now(dt.UTC))


def test_lease_annotations_are_set_and_removed_without_compare_and_swap(
    backend: Backend,
) -> None:
    store = backend.store
    made = store.note_lease("pool-n", {"example.org/a": "1", "example.org/gone": None})
    assert (made.holder, made.renewed, made.notes) == ("", None, {"example.org/a": "1"})
    assert store.get_lease("pool-n") == made
    # No read first and no conflict: each patch lands on whatever is there.
    store.note_lease("pool-n", {"example.org/b": "2"})
    both = store.note_lease("pool-n", {"example.org/a": None, "example.org/c": "3"})
    assert both.notes == {"example.org/b": "2", "example.org/c": "3"}
    assert both.resource_version != made.resource_version
    # The holder's writes stay compare-and-swap, and keep the annotations.
    with pytest.raises(ConflictError):
        store.write_lease(made, "pool-n", "node-a", 5.0)
    taken = store.write_lease(both, "pool-n", "node-a", 5.0)
    assert taken.holder == "node-a"
    assert taken.notes == both.notes
    noted = store.note_lease("pool-n", {"example.org/d": "4"})
    assert noted.holder == "node-a"
    assert noted.renewed == taken.renewed
    with pytest.raises(ConflictError):
        store.write_lease(taken, "pool-n", "node-a", 5.0)  # the patch moved it on
    latest = store.get_lease("pool-n")
    assert latest is not None
    assert latest.notes == {"example.org/b": "2", "example.org/c": "3", "example.org/d": "4"}


def test_a_lease_watch_reports_the_lease_then_each_change_until_it_times_out(
    backend: Backend,
) -> None:
    store = backend.store
    # The API ends a watch on whole seconds; the twin needs no time to deliver.
    timeout_s = 0.2 if isinstance(store, MemoryStore) else 5.0
    taken = store.write_lease(None, "pool-w", "node-a", 5.0)
    began = time.monotonic()
    watch = iter(store.watch_lease("pool-w", timeout_s))
    first = next(watch)  # the watch is open: later changes reach it, in order
    given_back = store.write_lease(taken, "pool-w", "", 5.0)
    retaken = store.write_lease(given_back, "pool-w", "node-b", 5.0)
    assert store.delete_lease(retaken)
    seen = [first, *watch]  # ends when the watch times out
    assert time.monotonic() - began >= timeout_s * 0.9
    assert [None if r is None else (r.holder, r.resource_version) for r in seen] == [
        ("node-a", taken.resource_version),
        ("", given_back.resource_version),
        ("node-b", retaken.resource_version),
        None,
    ]
    # A Lease that does not exist yet: nothing until it is made.
    assert list(store.watch_lease("pool-none", min(timeout_s, 1.0))) == []


def test_memory_store_lease_watch_fails_as_injected() -> None:
    store = MemoryStore("pools")
    store.fail("watch_lease", StoreError("watch refused"))
    with pytest.raises(StoreError, match="watch refused"):
        next(iter(store.watch_lease("pool-x", 0.1)))
    assert list(store.watch_lease("pool-x", 0.05)) == []


@pytest.mark.parametrize(
    ("call", "name"),
    [
        ("get_pool", "x/../10.50.0.0-24"),
        ("get_pool", "Upper-Case"),
        ("get_reservation", "has space"),
        ("create_reservation", "a?b"),
        ("get_lease", "-leading-dash"),
        ("get_lease", "x" * 254),
    ],
)
def test_names_kubernetes_refuses_never_reach_the_store(
    backend: Backend, call: str, name: str
) -> None:
    store = backend.store
    calls = {
        "get_pool": lambda: store.get_pool(name, "10.5.0.0/24"),
        "get_reservation": lambda: store.get_reservation(name),
        "create_reservation": lambda: store.create_reservation(name, A),
        "get_lease": lambda: store.get_lease(name),
    }
    with pytest.raises(InvalidNameError):
        calls[call]()


def test_pods_read_as_the_api_reports_them(backend: Backend) -> None:
    namespace = f"p-{uuid.uuid4().hex[:8]}"
    uid = backend.make_pod(namespace, "web-0", "node-a")
    pod = backend.store.get_pod(namespace, "web-0")
    assert pod is not None
    assert (pod.podref, pod.uid, pod.node) == (f"{namespace}/web-0", uid, "node-a")
    assert pod.listed_addresses is None  # no network-status: unknown, never "none"
    assert backend.store.get_pod(namespace, "web-1") is None
    assert f"{namespace}/web-0" in {p.podref for p in backend.store.list_pods()}


def test_events_are_recorded_on_their_object(backend: Backend) -> None:
    namespace = f"e-{uuid.uuid4().hex[:8]}"
    uid = backend.make_pod(namespace, "web-0", "node-a")
    about = ObjectRef("Pod", "v1", namespace, "web-0", uid)
    backend.store.create_event(about, "AddressReleased", "released 10.1.0.5", warning=False)
    with pytest.raises(InvalidNameError):
        backend.store.create_event(
            ObjectRef("Pod", "v1", "Bad Namespace", "web-0"), "AddressReleased", "x"
        )


def test_memory_store_injects_failures_in_order() -> None:
    store = MemoryStore()
    store.fail("write_pool", ConflictError("first"), StoreError("second"))
    empty = store.get_pool("10.6.0.0-30", "10.6.0.0/30")
    with pytest.raises(ConflictError):
        store.write_pool(empty, {1: A})
    with pytest.raises(StoreError):
        store.write_pool(empty, {1: A})
    assert store.write_pool(empty, {1: A}).allocations == {1: A}
    assert store.calls["write_pool"] == 3
    with pytest.raises(ValueError, match="no method 'write_pools'"):
        store.fail("write_pools", ConflictError("x"))


def test_ipam_claims_are_read_listed_and_given_a_status(backend: Backend) -> None:
    store = backend.store
    namespace = f"c-{uuid.uuid4().hex[:8]}"
    assert store.get_ipam_claim(namespace, "vm-a.net1") is None
    backend.make_claim(namespace, "vm-a.net1", "blue", "net1")
    claim = store.get_ipam_claim(namespace, "vm-a.net1")
    assert claim is not None
    assert (claim.ref, claim.network, claim.interface) == (f"{namespace}/vm-a.net1", "blue", "net1")
    assert (claim.ips, claim.owner_pod) == ((), "")
    assert claim.ref in {listed.ref for listed in store.list_ipam_claims()}
    written = store.write_ipam_claim_status(claim, ["10.1.0.5/24", "fd00::5/64"], "launcher-a")
    assert (written.ips, written.owner_pod) == (("10.1.0.5/24", "fd00::5/64"), "launcher-a")
    assert written.resource_version != claim.resource_version
    again = store.get_ipam_claim(namespace, "vm-a.net1")
    assert again is not None and again.ips == ("10.1.0.5/24", "fd00::5/64")
    assert (again.network, again.interface) == ("blue", "net1")  # status writes keep the spec
    assert [(c["type"], c["status"], c["reason"]) for c in again.conditions] == [
        ("IPsAllocated", "True", "SuccessfulAllocation")
    ]
    with pytest.raises(ConflictError):
        store.write_ipam_claim_status(claim, ["10.1.0.6/24"], "launcher-b")  # read before
    backend.delete_claim(namespace, "vm-a.net1")
    assert store.get_ipam_claim(namespace, "vm-a.net1") is None
    assert f"{namespace}/vm-a.net1" not in {listed.ref for listed in store.list_ipam_claims()}
    with pytest.raises(NotFoundError):
        store.write_ipam_claim_status(written, ["10.1.0.5/24"], "launcher-a")
    with pytest.raises(InvalidNameError):
        store.get_ipam_claim(namespace, "Not/A/Name")


def test_a_block_without_a_given_size_counts_the_addresses_its_range_allows(
    backend: Backend,
) -> None:
    store = backend.store
    range_of = {"whereabouts-py.io/range": "10.9.0.0/16"}
    inner = store.write_pool(store.get_pool("10.9.1.0-26", "10.9.1.0/26"), {}, annotations=range_of)
    first = store.write_pool(store.get_pool("10.9.0.0-26", "10.9.0.0/26"), {}, annotations=range_of)
    assert inner.status["size"] == 64  # no network or last address of the /16 in it
    assert first.status["size"] == 63  # holds the /16's network address


@pytest.mark.kube
def test_a_store_reads_what_another_writer_changed_in_an_entry_it_decoded_before(
    control_plane: Any,
) -> None:
    """KubeStore keeps the entries it decoded last (DecodedEntries): an entry that
    another writer changed under the same key must read as changed."""
    namespace = f"s-{uuid.uuid4().hex[:10]}"
    control_plane.kubectl("create", "namespace", namespace)
    api = connect(str(control_plane.kubeconfig))
    try:
        ours, theirs = KubeStore(api, namespace), KubeStore(api, namespace)
        written = ours.write_pool(ours.get_pool("10.9.0.0-29", "10.9.0.0/29"), {1: A, 2: B})
        assert ours.get_pool("10.9.0.0-29", "10.9.0.0/29").allocations == {1: A, 2: B}
        moved = Allocation("c-1", "ns/pod-a", "net1", node="node-z", pod_uid="uid-a")
        theirs.write_pool(theirs.get_pool("10.9.0.0-29", "10.9.0.0/29"), {1: moved, 3: GO_MADE})
        assert written.allocations == {1: A, 2: B}
        assert ours.get_pool("10.9.0.0-29", "10.9.0.0/29").allocations == {1: moved, 3: GO_MADE}
    finally:
        api.close()
