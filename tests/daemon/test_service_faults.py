"""The daemon's service with a failure or a conflict at each step of ADD, DEL and GC,
and of the release of a large range's block entry that the Go plugin's object refuses.

The service runs on the in-memory store (held to the real API by
tests/store), which fails exactly the call a test names; after every failure
the pools and reservations must be in a state the order of writes promises:
an entry without its reservation at worst (the reconciler repairs that), never
a reservation without its entry, never half of an ADD, and a retry of the
same verb finishes the job.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from whereabouts_py.core.allocator import Allocation
from whereabouts_py.daemon.service import IPAMService
from whereabouts_py.errors import (
    ApiUnavailableError,
    ConflictError,
    GarbageCollectionError,
    WhereaboutsError,
)
from whereabouts_py.store.memory import MemoryStore

RANGE = "10.77.0.0/29"
POOL = "10.77.0.0-29"
SECOND_RANGE = "10.78.0.0/29"
SECOND_POOL = "10.78.0.0-29"
CONFIG: dict[str, Any] = {
    "cniVersion": "1.1.0",
    "name": "faultnet",
    "type": "macvlan",
    "ipam": {"type": "whereabouts", "range": RANGE},
}
TWO_RANGES: dict[str, Any] = {
    **CONFIG,
    "ipam": {"type": "whereabouts", "ipRanges": [{"range": RANGE}, {"range": SECOND_RANGE}]},
}


class FaultyStore(MemoryStore):
    """Fails the n-th call of a method (counted from the store's creation)."""

    def __init__(self) -> None:
        super().__init__("pools")
        self.planned: dict[tuple[str, int], WhereaboutsError] = {}

    def fail_call(self, method: str, nth: int, error: WhereaboutsError) -> None:
        self.planned[(method, nth)] = error

    def fail_next(self, method: str, error: WhereaboutsError) -> None:
        self.fail_call(method, self.calls[method] + 1, error)

    def _enter(self, method: str) -> None:
        super()._enter(method)
        error = self.planned.pop((method, self.calls[method]), None)
        if error is not None:
            raise error


def outage(what: str) -> ApiUnavailableError:
    return ApiUnavailableError(f"{what}: the API server is not reachable")


def request(
    command: str, container: str, pod: str = "web-0", config: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "command": command,
        "containerID": container,
        "ifname": "net1",
        "netns": f"/var/run/netns/{container}",
        "args": f"K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}",
        "config": config or CONFIG,
    }


def gc_request(*valid: str) -> dict[str, Any]:
    return {
        "command": "GC",
        "config": {
            **CONFIG,
            "cni.dev/valid-attachments": [{"containerID": c, "ifname": "net1"} for c in valid],
        },
    }


def entries(store: MemoryStore, pool: str = POOL, cidr: str = RANGE) -> dict[int, str]:
    """Pool entries: offset -> container ID."""
    return {k: a.container_id for k, a in store.get_pool(pool, cidr).allocations.items()}


def reservations(store: MemoryStore) -> dict[str, str]:
    """Reservations: name -> container ID of the holder."""
    return {r.name: r.holder.container_id for r in store.list_reservations()}


def address(result: dict[str, Any]) -> str:
    return str(result["ips"][0]["address"])


@pytest.fixture
def store() -> FaultyStore:
    return FaultyStore()


@pytest.fixture
def service(store: FaultyStore) -> IPAMService:
    return IPAMService(store, "node-a", coordination="never")


# --- ADD ---------------------------------------------------------------------------------


def test_add_that_cannot_read_the_pool_writes_nothing(
    store: FaultyStore, service: IPAMService
) -> None:
    store.fail_next("get_pool", outage("reading the pool"))
    with pytest.raises(ApiUnavailableError):
        service.handle(request("ADD", "ctr-1"))
    assert entries(store) == {} and reservations(store) == {}
    assert address(service.handle(request("ADD", "ctr-1"))) == "10.77.0.1/29"
    assert entries(store) == {1: "ctr-1"} and reservations(store) == {"10.77.0.1": "ctr-1"}


def test_add_retries_pool_write_conflicts(store: FaultyStore, service: IPAMService) -> None:
    store.fail("write_pool", ConflictError("stale"), ConflictError("stale again"))
    assert address(service.handle(request("ADD", "ctr-1"))) == "10.77.0.1/29"
    assert store.calls["write_pool"] == 3
    assert entries(store) == {1: "ctr-1"} and reservations(store) == {"10.77.0.1": "ctr-1"}


def test_add_whose_pool_write_fails_holds_nothing(store: FaultyStore, service: IPAMService) -> None:
    store.fail_next("write_pool", outage("writing the pool"))
    with pytest.raises(ApiUnavailableError):
        service.handle(request("ADD", "ctr-1"))
    assert entries(store) == {} and reservations(store) == {}


def test_add_whose_reservation_fails_gives_its_entry_back(
    store: FaultyStore, service: IPAMService
) -> None:
    store.fail_next("create_reservation", outage("creating the reservation"))
    with pytest.raises(ApiUnavailableError, match="creating the reservation"):
        service.handle(request("ADD", "ctr-1"))
    assert entries(store) == {} and reservations(store) == {}


def test_add_whose_rollback_fails_leaves_an_entry_that_del_frees(
    store: FaultyStore, service: IPAMService
) -> None:
    store.fail_next("create_reservation", outage("creating the reservation"))
    store.fail_call("write_pool", 2, outage("writing the rollback"))  # 1: the entry itself
    with pytest.raises(ApiUnavailableError, match="creating the reservation"):
        service.handle(request("ADD", "ctr-1"))
    # An entry without reservation: what the reconciler repairs, never the reverse.
    assert entries(store) == {1: "ctr-1"} and reservations(store) == {}
    assert service.handle(request("DEL", "ctr-1")) == {}
    assert entries(store) == {} and reservations(store) == {}


def test_add_skips_an_address_another_attachment_reserved(
    store: FaultyStore, service: IPAMService
) -> None:
    other = Allocation("ctr-x", "default/elsewhere", "net9")  # through an overlapping range
    store.create_reservation("10.77.0.1", other)
    assert address(service.handle(request("ADD", "ctr-1"))) == "10.77.0.2/29"
    assert entries(store) == {2: "ctr-1"}
    assert reservations(store) == {"10.77.0.1": "ctr-x", "10.77.0.2": "ctr-1"}


def test_add_of_a_new_sandbox_takes_the_reservation_over_through_a_conflict(
    store: FaultyStore, service: IPAMService
) -> None:
    service.handle(request("ADD", "ctr-1"))
    store.fail_next("update_reservation", ConflictError("changed since read"))
    assert address(service.handle(request("ADD", "ctr-2"))) == "10.77.0.1/29"
    assert entries(store) == {1: "ctr-2"} and reservations(store) == {"10.77.0.1": "ctr-2"}
    # The old sandbox's late DEL frees nothing of the new one.
    assert service.handle(request("DEL", "ctr-1")) == {}
    assert entries(store) == {1: "ctr-2"} and reservations(store) == {"10.77.0.1": "ctr-2"}


@pytest.mark.parametrize(
    ("method", "nth"),
    [
        ("get_pool", 2),  # reading the second range's pool
        ("write_pool", 2),  # writing the second range's entry
        ("create_reservation", 2),  # reserving the second range's address
    ],
)
def test_add_of_two_ranges_is_all_or_nothing(
    store: FaultyStore, service: IPAMService, method: str, nth: int
) -> None:
    store.fail_call(method, nth, outage(f"{method} of the second range"))
    with pytest.raises(ApiUnavailableError, match="second range"):
        service.handle(request("ADD", "ctr-1", config=TWO_RANGES))
    assert entries(store) == {} and entries(store, SECOND_POOL, SECOND_RANGE) == {}
    assert reservations(store) == {}
    result = service.handle(request("ADD", "ctr-1", config=TWO_RANGES))
    assert [ip["address"] for ip in result["ips"]] == ["10.77.0.1/29", "10.78.0.1/29"]
    assert reservations(store) == {"10.77.0.1": "ctr-1", "10.78.0.1": "ctr-1"}


# --- DEL ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get_pool", "get_reservation", "delete_reservation"])
def test_del_that_fails_before_the_reservation_is_gone_keeps_everything(
    store: FaultyStore, service: IPAMService, method: str
) -> None:
    service.handle(request("ADD", "ctr-1"))
    store.fail_next(method, outage(method))
    with pytest.raises(ApiUnavailableError):
        service.handle(request("DEL", "ctr-1"))
    assert entries(store) == {1: "ctr-1"} and reservations(store) == {"10.77.0.1": "ctr-1"}
    assert service.handle(request("DEL", "ctr-1")) == {}
    assert entries(store) == {} and reservations(store) == {}


def test_del_whose_pool_write_fails_leaves_the_entry_for_its_retry(
    store: FaultyStore, service: IPAMService
) -> None:
    service.handle(request("ADD", "ctr-1"))
    store.fail_next("write_pool", outage("writing the pool"))
    with pytest.raises(ApiUnavailableError):
        service.handle(request("DEL", "ctr-1"))
    # Reservation first, then the entry: never a reservation without its entry.
    assert entries(store) == {1: "ctr-1"} and reservations(store) == {}
    assert service.handle(request("DEL", "ctr-1")) == {}
    assert entries(store) == {}


def test_del_retries_conflicts_on_the_reservation_and_the_pool(
    store: FaultyStore, service: IPAMService
) -> None:
    service.handle(request("ADD", "ctr-1"))
    store.fail_next("delete_reservation", ConflictError("changed since read"))
    store.fail_next("write_pool", ConflictError("stale"))
    assert service.handle(request("DEL", "ctr-1")) == {}
    assert entries(store) == {} and reservations(store) == {}


def test_del_never_deletes_a_reservation_a_new_sandbox_took_meanwhile(
    store: FaultyStore, service: IPAMService
) -> None:
    service.handle(request("ADD", "ctr-1"))
    newer = Allocation("ctr-2", "default/web-0", "net1", "node-a")
    taken_over = False
    original_delete = store.delete_reservation

    def delete_after_takeover(reservation: Any) -> bool:
        nonlocal taken_over
        if not taken_over:  # the new sandbox's ADD updates it between our read and delete
            taken_over = True
            store.update_reservation(reservation, newer)
        return original_delete(reservation)

    store.delete_reservation = delete_after_takeover  # type: ignore[method-assign]
    assert service.handle(request("DEL", "ctr-1")) == {}
    assert reservations(store) == {"10.77.0.1": "ctr-2"}


# --- GC ----------------------------------------------------------------------------------


def stale_pair(store: FaultyStore) -> IPAMService:
    """Two attachments an earlier daemon on node-a made; a fresh daemon runs GC."""
    before = IPAMService(store, "node-a", coordination="never")
    before.handle(request("ADD", "ctr-1", "web-1"))
    before.handle(request("ADD", "ctr-2", "web-2"))
    before.handle(request("ADD", "ctr-3", "web-3"))
    IPAMService(store, "node-b", coordination="never").handle(request("ADD", "ctr-b", "web-b"))
    return IPAMService(store, "node-a", coordination="never")


def test_gc_frees_stale_entries_and_keeps_the_valid_and_other_nodes(store: FaultyStore) -> None:
    service = stale_pair(store)
    assert service.handle(gc_request("ctr-3")) == {}
    assert entries(store) == {3: "ctr-3", 4: "ctr-b"}
    assert reservations(store) == {"10.77.0.3": "ctr-3", "10.77.0.4": "ctr-b"}


def test_gc_keeps_an_entry_whose_reservation_could_not_be_dropped(store: FaultyStore) -> None:
    service = stale_pair(store)
    store.fail_next("delete_reservation", outage("deleting a reservation"))
    with pytest.raises(GarbageCollectionError, match=re.escape("10.77.0.1")):
        service.handle(gc_request("ctr-3"))
    # The other stale attachment went; the failed one stays whole for the next GC.
    assert entries(store) == {1: "ctr-1", 3: "ctr-3", 4: "ctr-b"}
    assert reservations(store) == {
        "10.77.0.1": "ctr-1",
        "10.77.0.3": "ctr-3",
        "10.77.0.4": "ctr-b",
    }
    assert service.handle(gc_request("ctr-3")) == {}
    assert entries(store) == {3: "ctr-3", 4: "ctr-b"}


def test_gc_that_cannot_read_the_pool_frees_nothing(store: FaultyStore) -> None:
    service = stale_pair(store)
    store.fail_next("get_pool", outage("reading the pool"))
    with pytest.raises(GarbageCollectionError, match=RANGE):
        service.handle(gc_request("ctr-3"))
    assert entries(store) == {1: "ctr-1", 2: "ctr-2", 3: "ctr-3", 4: "ctr-b"}
    assert len(reservations(store)) == 4


def test_gc_whose_sweep_fails_leaves_entries_without_reservations(store: FaultyStore) -> None:
    service = stale_pair(store)
    store.fail_next("write_pool", outage("writing the pool"))
    with pytest.raises(GarbageCollectionError, match=RANGE):
        service.handle(gc_request("ctr-3"))
    assert entries(store) == {1: "ctr-1", 2: "ctr-2", 3: "ctr-3", 4: "ctr-b"}
    assert reservations(store) == {"10.77.0.3": "ctr-3", "10.77.0.4": "ctr-b"}
    assert service.handle(gc_request("ctr-3")) == {}
    assert entries(store) == {3: "ctr-3", 4: "ctr-b"}


def test_gc_sweep_retries_a_conflict_and_spares_an_entry_rewritten_meanwhile(
    store: FaultyStore,
) -> None:
    service = stale_pair(store)
    # Between GC's read and its write, ctr-2's pod gets a new sandbox (ctr-9) on its entry.
    snapshot = store.get_pool(POOL, RANGE)
    rewritten = dict(snapshot.allocations)
    rewritten[2] = Allocation("ctr-9", "default/web-2", "net1", "node-a")
    original_write = store.write_pool
    raced = False

    def write_after_race(current: Any, allocations: Any, **kwargs: Any) -> Any:
        nonlocal raced
        if not raced:
            raced = True
            original_write(store.get_pool(POOL, RANGE), rewritten)
        return original_write(current, allocations, **kwargs)

    store.write_pool = write_after_race  # type: ignore[method-assign]
    assert service.handle(gc_request("ctr-3")) == {}
    # The conflicting write was retried; the entry judged stale went, the rewritten one stays.
    assert raced and entries(store) == {2: "ctr-9", 3: "ctr-3", 4: "ctr-b"}


# --- a large range next to the Go plugin's whole-range object: mirror and release ----------

LARGE = "10.90.0.0/22"  # stored as blocks of 64 addresses
WHOLE = "10.90.0.0-22"  # the Go plugin's object of the whole range
BLOCK, BLOCK_CIDR = "10.90.0.0-26", "10.90.0.0/26"
LARGE_CONFIG: dict[str, Any] = {**CONFIG, "ipam": {"type": "whereabouts", "range": LARGE}}
GO_POD = Allocation("go-ctr", "default/go-pod", "net1")


def with_go_object(store: FaultyStore) -> None:
    """The Go plugin has made its whole-range object (empty)."""
    store.write_pool(store.get_pool(WHOLE, LARGE), {})


def test_add_mirrors_its_block_entry_into_the_go_object(store: FaultyStore) -> None:
    with_go_object(store)
    service = IPAMService(store, "node-a", coordination="never")
    assert address(service.handle(request("ADD", "ctr-1", config=LARGE_CONFIG))) == "10.90.0.1/22"
    assert entries(store, BLOCK, BLOCK_CIDR) == {1: "ctr-1"}
    assert entries(store, WHOLE, LARGE) == {1: "ctr-1"}
    assert reservations(store) == {"10.90.0.1": "ctr-1"}
    # DEL frees both; a failure on the Go object's write leaves the rest for the retry.
    store.fail_next("write_pool", outage("writing a pool"))
    with pytest.raises(ApiUnavailableError):
        service.handle(request("DEL", "ctr-1", config=LARGE_CONFIG))
    assert service.handle(request("DEL", "ctr-1", config=LARGE_CONFIG)) == {}
    assert entries(store, BLOCK, BLOCK_CIDR) == {} and entries(store, WHOLE, LARGE) == {}
    assert reservations(store) == {}


def test_add_whose_mirror_fails_releases_its_block_entry(store: FaultyStore) -> None:
    with_go_object(store)
    service = IPAMService(store, "node-a", coordination="never")
    writes = store.calls["write_pool"]
    store.fail_call("write_pool", writes + 2, outage("mirroring into the Go object"))
    with pytest.raises(ApiUnavailableError, match="mirroring"):
        service.handle(request("ADD", "ctr-1", config=LARGE_CONFIG))
    assert entries(store, BLOCK, BLOCK_CIDR) == {} and entries(store, WHOLE, LARGE) == {}
    assert reservations(store) == {}


def test_add_whose_reservation_fails_after_the_mirror_releases_both(store: FaultyStore) -> None:
    with_go_object(store)
    service = IPAMService(store, "node-a", coordination="never")
    store.fail_next("create_reservation", outage("creating the reservation"))
    with pytest.raises(ApiUnavailableError, match="creating the reservation"):
        service.handle(request("ADD", "ctr-1", config=LARGE_CONFIG))
    assert entries(store, BLOCK, BLOCK_CIDR) == {} and entries(store, WHOLE, LARGE) == {}
    assert reservations(store) == {}


def test_add_that_finds_the_go_plugin_took_its_address_moves_on(store: FaultyStore) -> None:
    with_go_object(store)
    service = IPAMService(store, "node-a", coordination="never")
    original_write = store.write_pool
    raced = False

    def go_takes_it_first(current: Any, allocations: Any, **kwargs: Any) -> Any:
        nonlocal raced
        written = original_write(current, allocations, **kwargs)
        if not raced and current.name == BLOCK:
            raced = True  # the Go plugin's ADD lands between our block write and our mirror
            original_write(store.get_pool(WHOLE, LARGE), {1: GO_POD})
        return written

    store.write_pool = go_takes_it_first  # type: ignore[method-assign]
    assert address(service.handle(request("ADD", "ctr-1", config=LARGE_CONFIG))) == "10.90.0.2/22"
    assert entries(store, BLOCK, BLOCK_CIDR) == {2: "ctr-1"}
    assert entries(store, WHOLE, LARGE) == {1: "go-ctr", 2: "ctr-1"}
    assert reservations(store) == {"10.90.0.2": "ctr-1"}


# --- DEL from a copy of the pool ------------------------------------------------------------


def test_a_del_whose_copy_of_the_pool_misses_its_entry_drops_the_reservation_first(
    store: FaultyStore, service: IPAMService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DEL looks up its entries in the writer's copy of the pool when the watch
    says it is the latest; should that copy lack an entry (a write not yet
    seen), the entry must not be released before its reservation is deleted."""
    service.handle(request("ADD", "c-1"))
    assert entries(store) == {1: "c-1"}
    writer = next(iter(service._writers.values()))
    stale = store.get_pool(POOL, RANGE)
    stale = type(stale)(stale.name, stale.cidr, {}, stale.resource_version)
    monkeypatch.setattr(writer, "current", lambda: stale)
    service.handle(request("DEL", "c-1"))
    assert entries(store) == {}
    assert reservations(store) == {}
