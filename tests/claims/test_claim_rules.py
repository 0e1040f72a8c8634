"""The ownership rule of persistent addresses, as pure functions (no API)."""

from __future__ import annotations

import json

import pytest
from netaddr import IPAddress

from whereabouts_py.core.addresses import AddressRange, parse_range
from whereabouts_py.core.allocator import Allocation, assign, release
from whereabouts_py.core.claims import (
    NETWORKS_ANNOTATION,
    allocated_conditions,
    allows_persistent_ips,
    claim_reference,
)
from whereabouts_py.core.ownership import (
    PodState,
    Verdict,
    entries_of,
    judge,
    plan_sweep,
    same_attachment,
)
from whereabouts_py.errors import ConfigError

CLAIM = "vms/vm-a.blue"
# The VM's first pod, then its next one (a restart, or a live migration's target).
FIRST = Allocation("ctr-1", "vms/launcher-a-1", "net1", "node-a", "uid-1", CLAIM)
SECOND = Allocation("ctr-2", "vms/launcher-a-2", "net1", "node-b", "uid-2", CLAIM)
STRANGER = Allocation("ctr-3", "vms/web-0", "net1", "node-b", "uid-3")


def rng(cidr: str) -> AddressRange:
    address_range, _ = parse_range(cidr)
    return address_range


def networks(*elements: dict[str, str]) -> dict[str, str]:
    return {NETWORKS_ANNOTATION: json.dumps(list(elements))}


def test_opt_in_is_a_boolean_of_the_network_config() -> None:
    assert allows_persistent_ips({"name": "blue", "allowPersistentIPs": True}) is True
    assert allows_persistent_ips({"name": "blue", "allowPersistentIPs": False}) is False
    assert allows_persistent_ips({"name": "blue"}) is False
    with pytest.raises(
        ConfigError,
        match=r"allowPersistentIPs=true: must be a JSON boolean \(true or false\), not str",
    ):
        allows_persistent_ips({"allowPersistentIPs": "true"})


def test_the_reference_is_found_by_interface_as_multus_names_it() -> None:
    annotations = networks(
        {"name": "red"},  # net1
        {"name": "blue", "ipam-claim-reference": "vm-a.blue"},  # net2
        {"name": "green", "interface": "eth5", "ipam-claim-reference": "vm-a.green"},
    )
    assert claim_reference(annotations, "net1", "red") is None
    assert claim_reference(annotations, "net2", "blue") == "vm-a.blue"
    assert claim_reference(annotations, "eth5", "green") == "vm-a.green"
    assert claim_reference(annotations, "net3", "green") is None  # it is called eth5
    assert claim_reference({}, "net1", "blue") is None
    assert claim_reference({NETWORKS_ANNOTATION: "blue, other/red@eth1"}, "net1", "blue") is None


def test_a_claim_of_another_namespace_cannot_be_referenced() -> None:
    annotations = networks({"name": "blue", "ipam-claim-reference": "other/vm-a.blue"})
    with pytest.raises(ConfigError, match=r"ipam-claim-reference.*other/vm-a\.blue"):
        claim_reference(annotations, "net1", "blue")


def test_every_pod_of_the_claim_gets_its_address() -> None:
    r = rng("10.1.0.0/24")
    offset, allocations = assign(r, {1: STRANGER}, FIRST)
    assert offset == 2
    again, moved = assign(r, allocations, SECOND)
    assert again == 2
    assert moved[2] == SECOND  # re-recorded for the new pod, still the claim's
    assert moved[1] == STRANGER and len(moved) == 2


def test_a_requested_address_moves_the_claim() -> None:
    r = rng("10.1.0.0/24")
    _, allocations = assign(r, {}, FIRST)
    offset, moved = assign(r, allocations, SECOND, IPAddress("10.1.0.9"))
    assert offset == 9 and moved == {9: SECOND}


def test_del_of_any_of_its_pods_keeps_a_claimed_address() -> None:
    allocations = {2: SECOND, 1: STRANGER}
    for container in ("ctr-1", "ctr-2"):
        remaining, freed = release(allocations, container, "net1")
        assert (remaining, freed) == (allocations, [])
    remaining, freed = release(allocations, "ctr-3", "net1")
    assert (remaining, freed) == ({2: SECOND}, [1])


def test_a_claimed_address_lives_and_dies_with_its_claim() -> None:
    alive = PodState("vms", "launcher-a-2", "uid-2", phase="Running", listed_addresses=frozenset())
    assert judge("10.1.0.2", SECOND, None, {CLAIM}) is Verdict.KEEP  # no pod at all: kept
    assert judge("10.1.0.2", SECOND, alive, {CLAIM}) is Verdict.KEEP  # not in network-status
    assert judge("10.1.0.2", SECOND, None, None) is Verdict.KEEP  # claims unknown: kept
    assert judge("10.1.0.2", SECOND, alive, set()) is Verdict.CLAIM_DELETED
    assert Verdict.CLAIM_DELETED.releases_now
    # An allocation without a claim is judged by its pod as before.
    assert judge("10.1.0.3", STRANGER, None, {CLAIM}) is Verdict.POD_DELETED


def test_the_sweep_releases_only_what_deleted_claims_owned() -> None:
    other = Allocation("ctr-9", "vms/launcher-b-1", "net1", "node-a", "uid-9", "vms/vm-b.blue")
    entries = entries_of("10.1.0.0-24", "10.1.0.0/24", {2: SECOND, 3: other})
    plan = plan_sweep(entries, {}, {}, repair_reservations=False, claims={CLAIM})
    assert [(e.address, v) for e, v in plan.release] == [("10.1.0.3", Verdict.CLAIM_DELETED)]


def test_reservations_of_the_claim_belong_to_its_entry() -> None:
    assert same_attachment(FIRST, SECOND)
    assert not same_attachment(STRANGER, SECOND)


def test_allocation_sets_its_condition_and_keeps_the_others() -> None:
    ready = {"type": "Ready", "status": "True", "reason": "Bound", "message": "", "x": 1}
    first = allocated_conditions((ready,), "2026-01-01T00:00:00Z")
    assert first[0] == ready
    assert first[1] == {
        "type": "IPsAllocated",
        "status": "True",
        "reason": "SuccessfulAllocation",
        "message": "addresses allocated by whereabouts-py",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    # Still true later: the transition time stays; one condition of the type.
    later = allocated_conditions(tuple(first), "2026-02-01T00:00:00Z")
    assert [c["type"] for c in later] == ["Ready", "IPsAllocated"]
    assert later[1]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    failed = dict(first[1], status="False", reason="AllocationFailed")
    assert allocated_conditions((failed,), "2026-03-01T00:00:00Z")[0]["lastTransitionTime"] == (
        "2026-03-01T00:00:00Z"
    )
