"""Pure rules for objects the Go plugin writes (no API server)."""

from __future__ import annotations

from whereabouts_py.core.allocator import Allocation
from whereabouts_py.core.ownership import (
    PoolObject,
    reservation_held_by,
    unmirrored_entries,
)

OURS = Allocation("ctr-1", "default/web-0", "net1", node="node-a", pod_uid="uid-1")
GO_ENTRY = Allocation("ctr-9", "default/legacy-0", "net1")
GO_RESERVATION = Allocation("", "default/legacy-0", "net1")  # no containerid


def test_a_go_reservation_is_held_by_the_entry_of_its_pod_and_interface() -> None:
    assert reservation_held_by(GO_RESERVATION, GO_ENTRY)
    assert not reservation_held_by(GO_RESERVATION, Allocation("ctr-9", "default/legacy-0", "net2"))
    assert not reservation_held_by(GO_RESERVATION, Allocation("ctr-9", "default/other", "net1"))
    # Without a pod identity there is nothing to match on.
    assert not reservation_held_by(Allocation("", "", "net1"), Allocation("ctr-9", "", "net1"))


def test_a_reservation_with_a_container_id_stays_strict() -> None:
    assert reservation_held_by(OURS, OURS)
    newer_sandbox = Allocation("ctr-2", "default/web-0", "net1")
    assert not reservation_held_by(newer_sandbox, OURS)


LARGE = "10.71.0.0/23"
BLOCK = PoolObject("10.71.0.64-26", "10.71.0.64/26", {1: OURS, 2: OURS}, whole_range=LARGE)


def test_block_entries_need_no_mirror_while_the_go_object_does_not_exist() -> None:
    assert unmirrored_entries([BLOCK]) == []


def test_block_entries_missing_from_the_go_object_are_found_with_what_it_holds_there() -> None:
    whole = PoolObject(
        "10.71.0.0-23",
        LARGE,
        {
            65: Allocation("ctr-1", "default/web-0", "net1"),  # mirrored (Go drops node, uid)
            66: GO_ENTRY,  # the Go plugin gave the address to another pod
        },
    )
    found = unmirrored_entries([BLOCK, whole])
    assert [(item.whole, item.offset, item.entry.address, item.clash) for item in found] == [
        ("10.71.0.0-23", 66, "10.71.0.66", GO_ENTRY)
    ]
    bare = PoolObject("10.71.0.0-23", LARGE, {})
    assert [(item.offset, item.clash) for item in unmirrored_entries([BLOCK, bare])] == [
        (65, None),
        (66, None),
    ]


def test_named_networks_mirror_into_their_own_object() -> None:
    block = PoolObject("blue-10.71.0.0-26", "10.71.0.0/26", {5: OURS}, whole_range=LARGE)
    other_network = PoolObject("10.71.0.0-23", LARGE, {})
    assert unmirrored_entries([block, other_network]) == []
    own = PoolObject("blue-10.71.0.0-23", LARGE, {})
    assert [item.whole for item in unmirrored_entries([block, own])] == ["blue-10.71.0.0-23"]
