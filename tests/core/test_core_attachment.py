"""One rule of "the same attachment", in a strict and a lenient form.

Records come from us (container ID, pod, interface, node, pod UID), from the
Go project's pools (container ID, pod, interface) and from the Go project's
reservations (pod and interface only, no container ID).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whereabouts_py.core import ownership
from whereabouts_py.core.addresses import parse_range
from whereabouts_py.core.allocator import (
    Allocation,
    _find_attachment,
    assign,
    find_owned,
    names_a_pod,
    release,
    same_attachment,
    same_claim,
    same_container_interface,
    same_pod_interface,
    same_sandbox_attachment,
)

OURS = Allocation("ctr-1", "default/web-0", "net1", node="node-a", pod_uid="uid-1")
NEWER_SANDBOX = Allocation("ctr-2", "default/web-0", "net1", node="node-a", pod_uid="uid-1")
OTHER_INTERFACE = Allocation("ctr-1", "default/web-0", "net2", node="node-a", pod_uid="uid-1")
OTHER_POD = Allocation("ctr-3", "default/web-1", "net1", node="node-a")
GO_ENTRY = Allocation("ctr-1", "default/web-0", "net1")  # a Go pool entry: no node, no UID
GO_RESERVATION = Allocation("", "default/web-0", "net1")  # Go reservations lack a container ID
OLD_GO_ENTRY = Allocation("ctr-1", "default/web-0", "")  # before Go recorded interfaces
PLAIN = Allocation("ctr-7", "", "eth0")  # plain CNI: no pod identity
PLAIN_OTHER = Allocation("ctr-8", "", "eth0")
CLAIM = "vms/vm-a"
CLAIM_FIRST = Allocation("ctr-4", "vms/launcher-1", "net1", ipam_claim=CLAIM)
CLAIM_SECOND = Allocation("ctr-5", "vms/launcher-2", "net1", ipam_claim=CLAIM)


def test_names_a_pod_needs_both_parts() -> None:
    assert names_a_pod("default/web-0")
    for podref in ("", "/", "default/", "/web-0", "web-0"):
        assert not names_a_pod(podref), podref


def test_same_container_interface_is_strict_on_the_container() -> None:
    assert same_container_interface(OURS, OURS)
    assert same_container_interface(GO_ENTRY, OURS)  # node and UID are not identity
    assert same_container_interface(OLD_GO_ENTRY, OURS)  # no interface recorded: any
    assert not same_container_interface(NEWER_SANDBOX, OURS)
    assert not same_container_interface(OTHER_INTERFACE, OURS)
    # A record without container ID never matches this way, even an empty asker.
    assert not same_container_interface(GO_RESERVATION, OURS)
    assert not same_container_interface(Allocation("", "", "net1"), Allocation("", "", "net1"))
    assert same_container_interface(PLAIN, PLAIN)
    assert not same_container_interface(PLAIN_OTHER, PLAIN)


def test_same_pod_interface_is_lenient_on_the_sandbox() -> None:
    assert same_pod_interface(NEWER_SANDBOX, OURS)
    assert same_pod_interface(GO_RESERVATION, OURS)
    assert same_pod_interface(OLD_GO_ENTRY, OURS)
    assert not same_pod_interface(OTHER_INTERFACE, OURS)
    assert not same_pod_interface(OTHER_POD, OURS)
    # Without pod identity nothing is "the same pod".
    assert not same_pod_interface(PLAIN, PLAIN)
    assert not same_pod_interface(Allocation("a", "/", "eth0"), Allocation("b", "/", "eth0"))


def test_same_claim_needs_a_claim_on_the_asker() -> None:
    assert same_claim(CLAIM_FIRST, CLAIM_SECOND)
    assert not same_claim(OURS, OURS)  # no claim: not by claim
    assert not same_claim(CLAIM_FIRST, OURS)
    assert not same_claim(OURS, CLAIM_FIRST)


@pytest.mark.parametrize(
    ("record", "owner", "strict", "lenient"),
    [
        (OURS, OURS, True, True),
        (GO_ENTRY, OURS, True, True),
        (NEWER_SANDBOX, OURS, False, True),  # the pod's next sandbox
        (GO_RESERVATION, OURS, True, True),  # Go-made: by pod and interface
        (GO_RESERVATION, GO_ENTRY, True, True),
        (GO_RESERVATION, OTHER_INTERFACE, False, False),
        (GO_RESERVATION, OTHER_POD, False, False),
        (Allocation("", "", "net1"), Allocation("ctr-9", "", "net1"), False, False),
        (OLD_GO_ENTRY, OURS, True, True),
        (OTHER_INTERFACE, OURS, False, False),
        (OTHER_POD, OURS, False, False),
        (PLAIN, PLAIN, True, True),
        (PLAIN_OTHER, PLAIN, False, False),
        (PLAIN, OURS, False, False),
        (OURS, PLAIN, False, False),
        (CLAIM_FIRST, CLAIM_SECOND, True, True),  # whichever of the claim's pods
        (OURS, CLAIM_FIRST, False, False),
    ],
)
def test_strict_and_lenient_forms(
    record: Allocation, owner: Allocation, strict: bool, lenient: bool
) -> None:
    assert same_sandbox_attachment(record, owner) is strict
    assert same_attachment(record, owner) is lenient


def test_ownership_uses_the_same_rules() -> None:
    assert ownership.same_attachment is same_attachment
    assert ownership.reservation_held_by is same_sandbox_attachment


def test_the_allocator_finds_and_frees_by_these_rules() -> None:
    rng, _ = parse_range("10.9.0.0/29")
    pool = {1: GO_ENTRY, 2: OTHER_INTERFACE, 3: PLAIN}
    # ADD of the pod's next sandbox takes the pod's entry and records itself there.
    offset, updated = assign(rng, pool, NEWER_SANDBOX)
    assert offset == 1 and updated[1] == NEWER_SANDBOX
    assert find_owned(pool, "default/web-0", "net2") == 2
    assert find_owned(pool, "/", "net1") is None
    # ADD without pod identity: by container only.
    assert assign(rng, pool, PLAIN)[0] == 3
    assert assign(rng, pool, PLAIN_OTHER)[0] == 4
    # DEL by container and interface: the old sandbox's DEL frees nothing of the new one.
    assert release(updated, "ctr-1", "net1") == ({**updated}, [])
    remaining, freed = release(pool, "ctr-1", "net1")
    assert freed == [1] and remaining == {2: OTHER_INTERFACE, 3: PLAIN}
    # A record without interface (old Go) goes with its container's DEL.
    assert release({5: OLD_GO_ENTRY}, "ctr-1", "net1") == ({}, [5])


_PODS = st.sampled_from(["", "/", "ns/a", "ns/b", "other/a"])
_CONTAINERS = st.sampled_from(["", "c1", "c2"])
_IFNAMES = st.sampled_from(["", "net1", "net2"])
_RECORDS = st.builds(Allocation, _CONTAINERS, _PODS, _IFNAMES)


@given(st.dictionaries(st.integers(1, 20), _RECORDS, max_size=12), _RECORDS)
def test_the_idempotency_lookup_finds_the_lowest_entry_same_attachment_accepts(
    allocations: dict[int, Allocation], owner: Allocation
) -> None:
    matching = [offset for offset, record in allocations.items() if same_attachment(record, owner)]
    assert _find_attachment(allocations, owner) == (min(matching) if matching else None)
