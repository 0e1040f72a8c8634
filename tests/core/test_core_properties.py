"""Property tests: the allocator's invariants over generated ranges and pools."""

from __future__ import annotations

from dataclasses import dataclass

import netaddr
from hypothesis import given, settings
from hypothesis import strategies as st

from whereabouts_py.core.addresses import AddressRange, parse_range
from whereabouts_py.core.allocator import Allocation, assign, release
from whereabouts_py.core.codec import decode_allocations, encode_allocations
from whereabouts_py.errors import PoolExhaustedError

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)


@dataclass(frozen=True)
class Case:
    address_range: AddressRange
    held: dict[int, Allocation]


@st.composite
def ranges(draw: st.DrawFn) -> AddressRange:
    """Small IPv4 or IPv6 ranges with bounds, excludes and a gateway."""
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    prefix = draw(st.integers(min_value=bits - 8, max_value=bits))
    base = 0x0A000000 if version == 4 else 0xFD00 << 112
    network = netaddr.IPNetwork(f"{netaddr.IPAddress(base, version)}/{prefix}")
    size = network.size

    def address(offset: int) -> str:
        return str(netaddr.IPAddress(int(network.first) + offset, version))

    offsets = st.integers(min_value=0, max_value=size - 1)
    range_start = draw(st.none() | offsets.map(address))
    range_end = draw(st.none() | offsets.map(address))
    exclude = draw(
        st.lists(
            st.tuples(offsets, st.integers(min_value=prefix, max_value=bits)).map(
                lambda pair: f"{address(pair[0])}/{pair[1]}"
            )
            | offsets.map(address),
            max_size=3,
        )
    )
    gateway = draw(st.none() | offsets.map(lambda o: netaddr.IPAddress(address(o))))
    address_range, _ = parse_range(
        str(network), range_start=range_start, range_end=range_end, exclude=exclude, gateway=gateway
    )
    return address_range


@st.composite
def cases(draw: st.DrawFn) -> Case:
    address_range = draw(ranges())
    size = address_range.network.size
    held_offsets = draw(st.sets(st.integers(min_value=0, max_value=size - 1), max_size=40))
    held = {o: Allocation(f"c{o}", f"ns/held-{o}", "net1") for o in held_offsets}
    return Case(address_range, held)


def excluded_by_config(address_range: AddressRange, offset: int) -> bool:
    absolute = int(address_range.network.first) + offset
    return any(low <= absolute <= high for low, high in address_range.excluded)


@PROPERTY_SETTINGS
@given(cases())
def test_assign_never_returns_a_forbidden_address(case: Case) -> None:
    r, held = case.address_range, case.held
    owner = Allocation("new", "ns/new", "net1")
    try:
        offset, allocations = assign(r, held, owner)
    except PoolExhaustedError:
        assert not any(r.is_assignable_offset(o) and o not in held for o in range(r.network.size))
        return
    ip = r.address_at(offset)
    assert offset not in held
    assert offset != 0
    assert offset != r.network.size - 1
    assert not excluded_by_config(r, offset)
    assert r.gateway is None or ip != r.gateway
    assert r.first <= int(ip) <= r.last
    # Lowest: nothing assignable and free below it.
    assert not any(r.is_assignable_offset(o) and o not in held for o in range(offset))
    assert allocations == {**held, offset: owner}


@PROPERTY_SETTINGS
@given(cases())
def test_capacity_matches_a_brute_force_count(case: Case) -> None:
    r = case.address_range
    assert r.capacity() == sum(r.is_assignable_offset(o) for o in range(r.network.size))
    assert r.capacity() == sum(r.is_assignable(r.address_at(o)) for o in range(r.network.size))


@PROPERTY_SETTINGS
@given(cases(), st.text(min_size=1, max_size=8))
def test_assign_is_idempotent_per_pod_and_interface(case: Case, new_container: str) -> None:
    r, held = case.address_range, case.held
    try:
        offset, allocations = assign(r, held, Allocation("first", "ns/pod", "net1"))
    except PoolExhaustedError:
        return
    renewed = Allocation(new_container, "ns/pod", "net1")
    again, allocations = assign(r, allocations, renewed)
    assert again == offset
    assert allocations[offset] == renewed
    assert len(allocations) == len(held) + 1


@PROPERTY_SETTINGS
@given(cases())
def test_release_then_reassign_gets_the_same_lowest_address(case: Case) -> None:
    r, held = case.address_range, case.held
    owner = Allocation("c-x", "ns/x", "eth0")
    try:
        offset, allocations = assign(r, held, owner)
    except PoolExhaustedError:
        return
    remaining, released = release(allocations, "c-x", "eth0")
    assert released == [offset]
    assert remaining == held
    again, _ = assign(r, remaining, Allocation("c-y", "ns/y", "eth0"))
    assert again == offset


@PROPERTY_SETTINGS
@given(
    st.sampled_from(["10.0.0.0/8", "192.168.2.0/24", "2001:db8::/64", "fd00::/32", "::/0"]),
    st.integers(min_value=0, max_value=2**128),
)
def test_offset_address_round_trip(cidr: str, raw: int) -> None:
    r, _ = parse_range(cidr)
    offset = raw % r.network.size
    ip = r.address_at(offset)
    assert ip in r.network
    assert r.offset_of(ip) == offset


@PROPERTY_SETTINGS
@given(cases())
def test_codec_round_trip(case: Case) -> None:
    assert decode_allocations({"allocations": encode_allocations(case.held)}) == case.held
