"""The daemon's claim path on the in-memory store: the answers to every odd case.

The store is held to the real API by tests/store; here its faults are placed
exactly (a status write that conflicts, a claim deleted during the ADD).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from whereabouts_py.core.claims import ClaimState
from whereabouts_py.core.ownership import PodState
from whereabouts_py.daemon.service import IPAMService
from whereabouts_py.errors import ApiUnavailableError, ConfigError, ConflictError, TryAgainError
from whereabouts_py.store.memory import MemoryStore

CONFIG: dict[str, Any] = {
    "cniVersion": "1.1.0",
    "name": "blue",
    "type": "macvlan",
    "allowPersistentIPs": True,
    "ipam": {"type": "whereabouts", "range": "10.78.0.0/29"},
}


def launcher(store: MemoryStore, name: str, claim: str, uid: str = "") -> None:
    networks = json.dumps([{"name": "blue", "ipam-claim-reference": claim}])
    store.put_pod(PodState("vms", name, uid or f"uid-{name}", networks=networks))


def request(command: str, pod: str, **config: Any) -> dict[str, Any]:
    return {
        "command": command,
        "containerID": f"ctr-{pod}",
        "ifname": "net1",
        "netns": f"/var/run/netns/{pod}",
        "args": f"K8S_POD_NAMESPACE=vms;K8S_POD_NAME={pod};K8S_POD_UID=uid-{pod}",
        "config": {**CONFIG, **config},
    }


@pytest.fixture
def store() -> MemoryStore:
    made = MemoryStore("pools")
    made.put_ipam_claim(ClaimState("vms", "vm-a.blue", "blue", "net1"))
    return made


def test_a_conflicting_status_write_is_read_again_and_retried(store: MemoryStore) -> None:
    service = IPAMService(store, "node-a", coordination="never")
    launcher(store, "launcher-1", "vm-a.blue")
    store.fail("write_ipam_claim_status", ConflictError("changed by someone"))
    answer = service.handle(request("ADD", "launcher-1"))
    assert answer["ips"] == [{"address": "10.78.0.1/29"}]
    claim = store.get_ipam_claim("vms", "vm-a.blue")
    assert claim is not None and (claim.ips, claim.owner_pod) == (("10.78.0.1/29",), "launcher-1")
    assert store.calls["write_ipam_claim_status"] == 2
    # The next pod of the claim finds the status current: no write at all.
    launcher(store, "launcher-2", "vm-a.blue")
    assert service.handle(request("ADD", "launcher-2"))["ips"] == answer["ips"]
    assert store.calls["write_ipam_claim_status"] == 2


def test_gc_and_del_leave_the_claims_address(store: MemoryStore) -> None:
    service = IPAMService(store, "node-a", coordination="never")
    launcher(store, "launcher-1", "vm-a.blue")
    store.put_pod(PodState("vms", "web-0", "uid-web-0", networks='[{"name": "blue"}]'))
    service.handle(request("ADD", "launcher-1"))
    service.handle(request("ADD", "web-0"))
    service.handle(request("DEL", "launcher-1"))
    after_del = store.get_pool("10.78.0.0-29", "10.78.0.0/29")
    assert {k: a.ipam_claim for k, a in after_del.allocations.items()} == {
        1: "vms/vm-a.blue",
        2: None,
    }
    # A GC that lists nothing (from a daemon that did not run these ADDs lately).
    restarted = IPAMService(store, "node-a", coordination="never")
    restarted.handle(request("GC", "launcher-1", **{"cni.dev/valid-attachments": []}))
    pool = store.get_pool("10.78.0.0-29", "10.78.0.0/29")
    assert {k: a.ipam_claim for k, a in pool.allocations.items()} == {1: "vms/vm-a.blue"}


def test_a_claim_for_another_network_is_refused(store: MemoryStore) -> None:
    store.put_ipam_claim(ClaimState("vms", "vm-r.red", "red", "net1"))
    service = IPAMService(store, "node-a", coordination="never")
    launcher(store, "launcher-r", "vm-r.red")
    with pytest.raises(
        ConfigError,
        match=r"IPAMClaim vms/vm-r\.red spec\.network=red: the claim is for another network",
    ) as raised:
        service.handle(request("ADD", "launcher-r"))
    assert raised.value.code == 7
    assert store.get_pool("10.78.0.0-29", "10.78.0.0/29").allocations == {}


def test_a_pod_not_yet_readable_or_replaced_is_tried_again(store: MemoryStore) -> None:
    service = IPAMService(store, "node-a", coordination="never")
    with pytest.raises(TryAgainError, match="pod vms/launcher-x") as missing:
        service.handle(request("ADD", "launcher-x"))
    assert missing.value.code == 11
    launcher(store, "launcher-x", "vm-a.blue", uid="another-uid")
    with pytest.raises(TryAgainError, match="uid-launcher-x"):
        service.handle(request("ADD", "launcher-x"))
    assert store.get_pool("10.78.0.0-29", "10.78.0.0/29").allocations == {}


def test_a_claim_deleted_during_the_add_fails_it_and_keeps_nothing_lost(
    store: MemoryStore,
) -> None:
    service = IPAMService(store, "node-a", coordination="never")
    launcher(store, "launcher-1", "vm-a.blue")
    store.fail("write_ipam_claim_status", ConflictError("changed"))
    original = store.get_ipam_claim

    reads = {"n": 0}

    def vanishing(namespace: str, name: str) -> ClaimState | None:
        reads["n"] += 1
        return original(namespace, name) if reads["n"] == 1 else None

    store.get_ipam_claim = vanishing  # type: ignore[method-assign]
    with pytest.raises(ConfigError, match="was deleted during the ADD"):
        service.handle(request("ADD", "launcher-1"))
    # The entry stays the (deleted) claim's: the reconciler releases it (claim_deleted).
    pool = store.get_pool("10.78.0.0-29", "10.78.0.0/29")
    assert [a.ipam_claim for a in pool.allocations.values()] == ["vms/vm-a.blue"]


def test_without_a_reference_the_opted_in_network_allocates_per_pod(store: MemoryStore) -> None:
    service = IPAMService(store, "node-a", coordination="never")
    store.put_pod(PodState("vms", "web-0", "uid-web-0", networks='[{"name": "blue"}]'))
    store.put_pod(PodState("vms", "web-1", "uid-web-1", networks=None))
    assert service.handle(request("ADD", "web-0"))["ips"] == [{"address": "10.78.0.1/29"}]
    assert service.handle(request("ADD", "web-1"))["ips"] == [{"address": "10.78.0.2/29"}]
    pool = store.get_pool("10.78.0.0-29", "10.78.0.0/29")
    assert [a.ipam_claim for a in pool.allocations.values()] == [None, None]
    assert store.calls["get_ipam_claim"] == 0


def test_a_failed_add_of_the_claims_next_pod_leaves_the_claims_address(
    store: MemoryStore,
) -> None:
    service = IPAMService(store, "node-a", coordination="never")
    store.put_pod(PodState("vms", "other", "uid-other", networks='[{"name": "blue"}]'))
    assert service.handle(request("ADD", "other"))["ips"] == [{"address": "10.78.0.1/29"}]
    launcher(store, "launcher-1", "vm-a.blue")
    assert service.handle(request("ADD", "launcher-1"))["ips"] == [{"address": "10.78.0.2/29"}]
    # The migration target's ADD fails after its pool write (the reservation create).
    launcher(store, "launcher-2", "vm-a.blue")
    store.fail("create_reservation", ApiUnavailableError("injected", "test"))
    with pytest.raises(ApiUnavailableError):
        service.handle(request("ADD", "launcher-2"))
    held = store.get_pool("10.78.0.0-29", "10.78.0.0/29").allocations
    assert held[2].ipam_claim == "vms/vm-a.blue"  # still the claim's
    # A lower address is free now: the retry must still get the claim's own.
    service.handle({**request("DEL", "other")})
    assert service.handle(request("ADD", "launcher-2"))["ips"] == [{"address": "10.78.0.2/29"}]
