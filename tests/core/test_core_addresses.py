"""AddressRange: parsing, assignability, offsets, capacity and the free-address walk."""

from __future__ import annotations

import random
import time

import pytest
from netaddr import IPAddress

from whereabouts_py.core.addresses import AddressRange, parse_network, parse_range
from whereabouts_py.errors import ConfigError


def rng(spec: str, **kwargs: object) -> AddressRange:
    address_range, _ = parse_range(spec, **kwargs)  # type: ignore[arg-type]
    return address_range


def test_whole_ipv4_range_skips_network_and_broadcast() -> None:
    r = rng("192.168.2.0/24")
    assert r.cidr == "192.168.2.0/24"
    assert r.version == 4
    assert IPAddress(r.first) == IPAddress("192.168.2.1")
    assert IPAddress(r.last) == IPAddress("192.168.2.254")
    assert r.capacity() == 254
    assert not r.is_assignable(IPAddress("192.168.2.0"))
    assert not r.is_assignable(IPAddress("192.168.2.255"))
    assert r.is_assignable(IPAddress("192.168.2.1"))


def test_host_bits_are_cleared() -> None:
    assert rng("192.168.2.77/24").cidr == "192.168.2.0/24"
    assert str(parse_network("2001:db8::1/64", "range")) == "2001:db8::/64"


def test_ipv6_never_hands_out_all_ones() -> None:
    r = rng("2001:db8::/120")
    assert r.capacity() == 254
    assert not r.is_assignable(IPAddress("2001:db8::ff"))
    assert not r.is_assignable(IPAddress("2001:db8::"))


def test_slash29_has_six_usable_and_five_with_gateway_inside() -> None:
    assert rng("10.0.0.0/29").capacity() == 6
    with_gateway = rng("10.0.0.0/29", gateway=IPAddress("10.0.0.1"))
    assert with_gateway.capacity() == 5
    assert not with_gateway.is_assignable(IPAddress("10.0.0.1"))
    assert with_gateway.lowest_free(set()) == 2


def test_gateway_outside_range_is_accepted_and_changes_nothing() -> None:
    r = rng("10.0.0.0/29", gateway=IPAddress("10.9.9.9"))
    assert r.capacity() == 6
    assert r.gateway == IPAddress("10.9.9.9")


def test_gateway_of_other_family_is_dropped() -> None:
    assert rng("2001:db8::/64", gateway=IPAddress("10.0.0.1")).gateway is None


@pytest.mark.parametrize("spec", ["10.0.0.0/31", "10.0.0.0/32", "2001:db8::/127", "2001:db8::/128"])
def test_tiny_networks_have_no_usable_address(spec: str) -> None:
    r, warnings = parse_range(spec)
    assert r.capacity() == 0
    assert r.lowest_free(set()) is None
    assert any("no assignable address" in w for w in warnings)


def test_first_last_prefix_sets_bounds() -> None:
    r, warnings = parse_range("192.168.2.10-192.168.2.20/24")
    assert r.cidr == "192.168.2.0/24"
    assert (r.first_offset, r.last_offset) == (10, 20)
    assert r.capacity() == 11
    assert warnings == []
    assert r.label == "192.168.2.10-192.168.2.20 of 192.168.2.0/24"


def test_first_last_prefix_overrides_explicit_bounds_with_warning() -> None:
    r, warnings = parse_range("192.168.2.10-192.168.2.20/24", range_start="192.168.2.5")
    assert r.first_offset == 10
    assert any("range_start" in w for w in warnings)


def test_first_last_prefix_with_first_outside_cidr_is_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_range("10.0.0.5-192.168.2.20/24")
    assert caught.value.key == "range"
    assert "10.0.0.5-192.168.2.20/24" in str(caught.value)


def test_range_start_end_bound_the_walk() -> None:
    r = rng("10.0.0.0/24", range_start="10.0.0.100", range_end="10.0.0.102")
    assert r.capacity() == 3
    assert list(r.iter_free(set())) == [100, 101, 102]


def test_bounds_outside_usable_are_ignored_with_warning() -> None:
    r, warnings = parse_range("10.0.0.0/24", range_start="10.1.0.5", range_end="10.0.0.255")
    assert (r.first_offset, r.last_offset) == (1, 254)
    assert len(warnings) == 1
    assert "range_start=10.1.0.5" in warnings[0]


def test_network_address_as_range_start_is_silently_the_default() -> None:
    r, warnings = parse_range("10.0.0.0/24", range_start="10.0.0.0")
    assert r.first_offset == 1
    assert warnings == []


def test_inverted_bounds_keep_start_and_ignore_end() -> None:
    r, warnings = parse_range("10.0.0.0/24", range_start="10.0.0.50", range_end="10.0.0.10")
    assert (r.first_offset, r.last_offset) == (50, 254)
    assert any("range_end" in w for w in warnings)


def test_unparsable_bound_is_ignored_with_warning() -> None:
    r, warnings = parse_range("10.0.0.0/24", range_start="not-an-ip")
    assert r.first_offset == 1
    assert any("not an IP address" in w for w in warnings)


def test_excludes_accept_cidrs_and_single_ips() -> None:
    r = rng("10.0.0.0/24", exclude=["10.0.0.0/28", "10.0.0.20"])
    assert r.capacity() == 254 - 15 - 1
    assert r.lowest_free(set()) == 16
    assert not r.is_assignable(IPAddress("10.0.0.20"))
    assert r.why_not_assignable(IPAddress("10.0.0.20")) == "is excluded"


def test_exclude_not_overlapping_warns() -> None:
    _, warnings = parse_range("10.0.0.0/24", exclude=["10.1.0.0/24"])
    assert any("exclude[0]" in w for w in warnings)


@pytest.mark.parametrize(
    ("spec", "kwargs", "key"),
    [
        ("10.0.0.0/33", {}, "range"),
        ("2001:db8::/129", {}, "range"),
        ("not-a-cidr", {}, "range"),
        ("10.0.0.0", {}, "range"),
        ("10.0.0.0/24", {"exclude": ["bogus"]}, "exclude[0]"),
        ("10.0.0.0/24", {"exclude": ["10.0.0.0/24", "10.0.0.0/40"]}, "exclude[1]"),
        ("2001:db8::/64", {"exclude": ["10.0.0.0/24"]}, "exclude[0]"),
        ("10.0.0.0/24", {"exclude": ["2001:db8::1"]}, "exclude[0]"),
        ("10.0.0.0/24", {"exclude": [5]}, "exclude[0]"),
    ],
)
def test_malformed_ranges(spec: str, kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_range(spec, **kwargs)  # type: ignore[arg-type]
    assert caught.value.key == key


def test_key_prefix_names_the_entry() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_range("10.0.0.0/24", exclude=["nope"], key_prefix="ipRanges[1].")
    assert caught.value.key == "ipRanges[1].exclude[0]"


def test_offsets_round_trip_ipv4_and_ipv6() -> None:
    r4 = rng("192.168.2.0/24")
    assert r4.offset_of(IPAddress("192.168.2.10")) == 10
    assert r4.address_at(10) == IPAddress("192.168.2.10")
    r6 = rng("2001:db8::/64")
    ip = IPAddress("2001:db8::ffff:ffff:ffff:fffe")
    assert r6.address_at(r6.offset_of(ip)) == ip
    assert r6.offset_of(ip) == 2**64 - 2
    with pytest.raises(ValueError):
        r4.offset_of(IPAddress("10.0.0.1"))
    with pytest.raises(ValueError):
        r4.address_at(256)


def test_ipv6_slash64_capacity_is_arithmetic() -> None:
    r = rng("2001:db8::/64")
    assert r.capacity() == 2**64 - 2


def test_huge_ipv6_exclude_is_jumped_not_walked() -> None:
    r = rng("2001:db8::/64", exclude=["2001:db8::/65"])
    started = time.perf_counter()
    assert r.lowest_free(set()) == 2**63
    assert r.capacity() == 2**63 - 1
    assert time.perf_counter() - started < 0.1


def test_lowest_free_skips_held_and_vetoed() -> None:
    r = rng("10.0.0.0/29")
    assert r.lowest_free({1, 2}) == 3
    assert r.lowest_free({1, 2}, blocked=lambda offset: offset == 3) == 4
    assert r.lowest_free({1, 2, 3, 4, 5, 6}) is None


def test_lowest_free_is_fast_on_a_nearly_full_slash16() -> None:
    r = rng("10.0.0.0/16")
    held = set(random.Random(7).sample(range(1, 65535), 60_000))
    held_dense = set(range(1, 60_001))
    started = time.perf_counter()
    for _ in range(10):
        assert r.lowest_free(held) not in held
        assert r.lowest_free(held_dense) == 60_001
    assert (time.perf_counter() - started) / 20 < 0.05  # ~2 ms measured; generous for CI


def test_iter_free_from_a_start_offset() -> None:
    r = rng("10.0.0.0/28", exclude=["10.0.0.8/30"])
    assert list(r.iter_free({3}, start=2)) == [2, 4, 5, 6, 7, 12, 13, 14]
