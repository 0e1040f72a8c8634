"""CNI GC never undoes an ADD that the runtime's list of valid attachments predates.

The daemon's service runs on the in-memory store (held to the real API by
tests/store), so the interleaving is placed exactly: an ADD has written its
pool entry and is creating its reservation when a GC arrives whose list does
not name it.
"""

from __future__ import annotations

import threading
from typing import Any

from whereabouts_py.core.allocator import Allocation
from whereabouts_py.daemon.service import IPAMService
from whereabouts_py.store.memory import MemoryStore
from whereabouts_py.store.values import Reservation

CONFIG: dict[str, Any] = {
    "cniVersion": "1.1.0",
    "name": "gcnet",
    "type": "macvlan",
    "ipam": {"type": "whereabouts", "range": "10.77.0.0/29"},
}


class PausingStore(MemoryStore):
    """Holds every reservation create until the test lets it go."""

    def __init__(self) -> None:
        super().__init__("pools")
        self.creating = threading.Event()
        self.go_on = threading.Event()

    def create_reservation(self, name: str, holder: Allocation) -> Reservation:
        self.creating.set()
        assert self.go_on.wait(30), "the test never let the reservation through"
        return super().create_reservation(name, holder)


def request(command: str, container: str, pod: str, **config: Any) -> dict[str, Any]:
    return {
        "command": command,
        "containerID": container,
        "ifname": "net1",
        "netns": f"/var/run/netns/{pod}",
        "args": f"K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}",
        "config": {**CONFIG, **config},
    }


def test_gc_spares_an_add_still_in_flight() -> None:
    store = PausingStore()
    service = IPAMService(store, "node-a", coordination="never")
    answers: list[dict[str, Any]] = []
    adding = threading.Thread(
        target=lambda: answers.append(service.handle(request("ADD", "ctr-new", "web-0")))
    )
    adding.start()
    try:
        assert store.creating.wait(30), "the ADD never reached its reservation"
        # The runtime listed its attachments before this ADD began: ctr-new is not there.
        service.handle(request("GC", "", "", **{"cni.dev/valid-attachments": []}))
    finally:
        store.go_on.set()
        adding.join(30)
    assert answers and answers[0]["ips"][0]["address"] == "10.77.0.1/29"
    (pool,) = store.list_pools()
    assert {k: (a.container_id, a.podref) for k, a in pool.allocations.items()} == {
        1: ("ctr-new", "default/web-0")
    }
    assert [r.name for r in store.list_reservations()] == ["10.77.0.1"]
    # The next pod gets the next address, never the one just handed out.
    store.go_on.set()
    other = service.handle(request("ADD", "ctr-other", "web-1"))
    assert other["ips"][0]["address"] == "10.77.0.2/29"


def test_gc_still_frees_what_no_recent_add_made() -> None:
    store = MemoryStore("pools")
    service = IPAMService(store, "node-a", coordination="never")
    service.handle(request("ADD", "ctr-kept", "web-0"))
    # An attachment this node made before the daemon started (no ADD in its memory).
    empty = store.get_pool("10.77.0.0-29", "10.77.0.0/29")
    current = store.get_pool(empty.name, empty.cidr)
    stale = Allocation("ctr-gone", "default/web-9", "net1", node="node-a")
    store.write_pool(current, {**current.allocations, 5: stale})
    store.create_reservation("10.77.0.5", stale)
    service.handle(
        request(
            "GC",
            "",
            "",
            **{"cni.dev/valid-attachments": [{"containerID": "ctr-kept", "ifname": "net1"}]},
        )
    )
    (pool,) = store.list_pools()
    assert sorted(a.container_id for a in pool.allocations.values()) == ["ctr-kept"]
    assert [r.name for r in store.list_reservations()] == ["10.77.0.1"]
