"""Allocation policy: assign, idempotency, requested addresses, release."""

from __future__ import annotations

import pytest
from netaddr import IPAddress

from whereabouts_py.core.addresses import AddressRange, parse_range
from whereabouts_py.core.allocator import Allocation, assign, find_owned, release, release_where
from whereabouts_py.errors import AddressOutOfRangeError, AddressTakenError, PoolExhaustedError


def rng(spec: str, **kwargs: object) -> AddressRange:
    address_range, _ = parse_range(spec, **kwargs)  # type: ignore[arg-type]
    return address_range


POD_A = Allocation("c-a", "default/a", "net1", node="n1", pod_uid="uid-a")
POD_B = Allocation("c-b", "default/b", "net1")


def test_assign_takes_lowest_free() -> None:
    r = rng("10.0.0.0/24", gateway=IPAddress("10.0.0.1"))
    offset, allocations = assign(r, {}, POD_A)
    assert offset == 2
    assert allocations == {2: POD_A}
    offset, allocations = assign(r, allocations, POD_B)
    assert offset == 3


def test_assign_does_not_mutate_input() -> None:
    r = rng("10.0.0.0/24")
    before = {1: POD_B}
    assign(r, before, POD_A)
    assert before == {1: POD_B}


def test_assign_is_idempotent_and_records_new_container() -> None:
    r = rng("10.0.0.0/24")
    offset, allocations = assign(r, {}, POD_A)
    restarted = Allocation("c-a2", "default/a", "net1", node="n2")
    again, allocations = assign(r, allocations, restarted)
    assert again == offset
    assert allocations == {offset: restarted}
    # A late DEL of the old sandbox frees nothing; the new sandbox's DEL does.
    remaining, released = release(allocations, "c-a", "net1")
    assert released == []
    remaining, released = release(remaining, "c-a2", "net1")
    assert released == [offset]
    assert remaining == {}


def test_same_pod_other_interface_gets_another_address() -> None:
    r = rng("10.0.0.0/24")
    first, allocations = assign(r, {}, POD_A)
    second, allocations = assign(r, allocations, Allocation("c-a", "default/a", "net2"))
    assert first != second
    assert find_owned(allocations, "default/a", "net2") == second


def test_attachment_without_pod_is_matched_by_container() -> None:
    r = rng("10.0.0.0/24")
    anonymous = Allocation("c-x", "", "eth0")
    first, allocations = assign(r, {}, anonymous)
    again, allocations = assign(r, allocations, anonymous)
    assert first == again
    other, allocations = assign(r, allocations, Allocation("c-y", "", "eth0"))
    assert other != first
    assert find_owned(allocations, "", "eth0") is None


def test_requested_address_is_given() -> None:
    r = rng("10.0.0.0/24")
    offset, allocations = assign(r, {}, POD_A, requested=IPAddress("10.0.0.77"))
    assert offset == 77
    assert allocations[77] == POD_A


def test_requested_address_held_by_other_pod() -> None:
    r = rng("10.0.0.0/24")
    with pytest.raises(AddressTakenError) as caught:
        assign(r, {77: POD_B}, POD_A, requested=IPAddress("10.0.0.77"))
    assert "10.0.0.77" in str(caught.value)
    assert "default/b" in str(caught.value)


def test_requested_address_vetoed_by_caller() -> None:
    r = rng("10.0.0.0/24")
    with pytest.raises(AddressTakenError):
        assign(r, {}, POD_A, requested=IPAddress("10.0.0.77"), blocked=lambda o: o == 77)


@pytest.mark.parametrize(
    "address",
    ["10.0.1.5", "10.0.0.0", "10.0.0.255", "10.0.0.1", "10.0.0.5", "10.0.0.250", "2001:db8::1"],
)
def test_requested_address_not_assignable(address: str) -> None:
    r = rng(
        "10.0.0.0/24",
        range_end="10.0.0.200",
        exclude=["10.0.0.4/30"],
        gateway=IPAddress("10.0.0.1"),
    )
    with pytest.raises(AddressOutOfRangeError) as caught:
        assign(r, {}, POD_A, requested=IPAddress(address))
    assert address in str(caught.value)
    assert "10.0.0.0/24" in str(caught.value)


def test_holder_asking_for_another_address_moves() -> None:
    r = rng("10.0.0.0/24")
    offset, allocations = assign(r, {}, POD_A)
    moved, allocations = assign(r, allocations, POD_A, requested=IPAddress("10.0.0.9"))
    assert moved == 9
    assert allocations == {9: POD_A}
    assert offset not in allocations


def test_holder_asking_for_its_own_address_is_idempotent() -> None:
    r = rng("10.0.0.0/24")
    _, allocations = assign(r, {}, POD_A, requested=IPAddress("10.0.0.9"))
    again, allocations2 = assign(r, allocations, POD_A, requested=IPAddress("10.0.0.9"))
    assert again == 9
    assert allocations2 == allocations


def test_blocked_offsets_are_skipped() -> None:
    r = rng("10.0.0.0/24")
    offset, _ = assign(r, {}, POD_A, blocked=lambda o: o < 10)
    assert offset == 10


def test_exhaustion_names_range_and_capacity() -> None:
    r = rng("10.0.0.0/30")
    allocations = {1: POD_B, 2: Allocation("c-c", "default/c", "net1")}
    with pytest.raises(PoolExhaustedError) as caught:
        assign(r, allocations, POD_A)
    assert "10.0.0.0/30" in str(caught.value)
    assert "2" in caught.value.details


@pytest.mark.parametrize("spec", ["10.0.0.0/31", "10.0.0.0/32", "2001:db8::/127", "2001:db8::/128"])
def test_tiny_networks_exhaust_at_once(spec: str) -> None:
    with pytest.raises(PoolExhaustedError) as caught:
        assign(rng(spec), {}, POD_A)
    assert spec in str(caught.value)


def test_release_then_reassign() -> None:
    r = rng("10.0.0.0/30")
    _, allocations = assign(r, {}, POD_A)
    _, allocations = assign(r, allocations, POD_B)
    allocations, released = release(allocations, "c-a", "net1")
    assert released == [1]
    offset, allocations = assign(r, allocations, Allocation("c-c", "default/c", "net1"))
    assert offset == 1


def test_release_matches_interface_too() -> None:
    allocations = {1: POD_A}
    remaining, released = release(allocations, "c-a", "net2")
    assert released == []
    assert remaining == allocations


def test_release_of_nothing_is_fine() -> None:
    assert release({}, "nope", "net1") == ({}, [])


def test_release_matches_go_allocations_without_ifname_by_container() -> None:
    allocations = {5: Allocation("c-old", "default/old", "")}
    remaining, released = release(allocations, "c-old", "net1")
    assert released == [5]
    assert remaining == {}


def test_release_where() -> None:
    allocations = {1: POD_A, 2: POD_B, 3: Allocation("c-c", "other/c", "net1")}
    remaining, released = release_where(allocations, lambda a: a.podref.startswith("default/"))
    assert released == [1, 2]
    assert list(remaining) == [3]
    assert len(allocations) == 3
