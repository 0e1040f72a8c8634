"""Byte compatibility with the CRD objects the Go project writes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from netaddr import IPAddress, IPNetwork

from whereabouts_py.core.allocator import Allocation
from whereabouts_py.core.codec import (
    DecodedEntries,
    decode_allocations,
    decode_reservation,
    encode_allocations,
    encode_pool_spec,
    encode_reservation,
    normalize_name,
    pool_name,
    reservation_name,
)
from whereabouts_py.errors import StoreError


@pytest.mark.parametrize(
    ("cidr", "network_name", "expected"),
    [
        ("192.168.2.0/24", None, "192.168.2.0-24"),
        ("192.168.2.0/24", "", "192.168.2.0-24"),
        ("2001::/116", None, "2001---116"),
        ("192.168.2.0/24", "storage", "storage-192.168.2.0-24"),
        ("192.168.2.77/24", None, "192.168.2.0-24"),
        ("2001:DB8:0:0::/64", None, "2001-db8---64"),
        (IPNetwork("10.0.0.0/8"), "n", "n-10.0.0.0-8"),
    ],
)
def test_pool_name(cidr: str, network_name: str | None, expected: str) -> None:
    assert pool_name(cidr, network_name) == expected


@pytest.mark.parametrize(
    ("ip", "network_name", "expected"),
    [
        ("2001::", None, "2001--0"),
        ("2001::1", None, "2001--1"),
        ("192.168.2.5", None, "192.168.2.5"),
        ("192.168.2.5", "storage", "storage-192.168.2.5"),
        (IPAddress("fd00::"), "n", "n-fd00--0"),
    ],
)
def test_reservation_name(ip: str, network_name: str | None, expected: str) -> None:
    assert reservation_name(ip, network_name) == expected


def test_normalize_name_trailing_colon_rule() -> None:
    assert normalize_name("abc:") == "abc-0"
    assert normalize_name("a:b/c") == "a-b-c"


GO_POOL = json.loads(
    """
    {"range": "192.168.2.0/24",
     "allocations": {
        "1": {"id": "0123abcd", "podref": "default/web-0", "ifname": "net1"},
        "17": {"id": "deadbeef", "podref": "kube-system/old"},
        "254": {"id": "feed", "podref": "ns/p", "ifname": "net2", "somethingNew": 3}
     }}
    """
)


def test_decode_go_shaped_pool() -> None:
    assert decode_allocations(GO_POOL) == {
        1: Allocation("0123abcd", "default/web-0", "net1"),
        17: Allocation("deadbeef", "kube-system/old", ""),
        254: Allocation("feed", "ns/p", "net2"),
    }


def test_decode_empty_pools() -> None:
    assert decode_allocations({"range": "10.0.0.0/24"}) == {}
    assert decode_allocations({"range": "10.0.0.0/24", "allocations": None}) == {}
    assert decode_allocations({"range": "10.0.0.0/24", "allocations": {}}) == {}


def test_encode_is_go_shaped_and_extras_only_when_set() -> None:
    allocations = {
        10: Allocation("c2", "ns/b", "net1", node="n1", pod_uid="u1"),
        2: Allocation("c1", "ns/a", "net1"),
    }
    encoded = encode_allocations(allocations)
    assert list(encoded) == ["2", "10"]
    assert encoded["2"] == {"id": "c1", "podref": "ns/a", "ifname": "net1"}
    assert encoded["10"] == {
        "id": "c2",
        "podref": "ns/b",
        "ifname": "net1",
        "node": "n1",
        "poduid": "u1",
    }
    spec = encode_pool_spec("10.0.0.0/24", allocations)
    assert spec["range"] == "10.0.0.0/24"
    assert decode_allocations(json.loads(json.dumps(spec))) == allocations


@pytest.mark.parametrize("key", ["-1", "x", "1.5", "", " 3", "+4", "٣"])
def test_bad_keys_are_store_errors_naming_the_key(key: str) -> None:
    spec: dict[str, Any] = {"allocations": {key: {"id": "c", "podref": "a/b"}}}
    with pytest.raises(StoreError) as caught:
        decode_allocations(spec, pool="192.168.2.0-24")
    assert repr(key) in str(caught.value)
    assert "192.168.2.0-24" in str(caught.value)


def test_leading_zero_keys_colliding_are_store_errors() -> None:
    spec = {"allocations": {"7": {"id": "a"}, "007": {"id": "b"}}}
    with pytest.raises(StoreError):
        decode_allocations(spec)


@pytest.mark.parametrize(
    "entry", [None, "x", {"id": 5, "podref": "a/b"}, {"id": "c", "podref": ["a"]}]
)
def test_bad_entries_are_store_errors(entry: Any) -> None:
    with pytest.raises(StoreError):
        decode_allocations({"allocations": {"1": entry}})


def test_allocations_not_an_object() -> None:
    with pytest.raises(StoreError):
        decode_allocations({"allocations": ["1"]})


def test_reservation_codec() -> None:
    go_spec = {"containerid": "abc", "podref": "ns/p", "ifname": "net1"}
    assert decode_reservation(go_spec) == Allocation("abc", "ns/p", "net1")
    assert decode_reservation({"containerid": "abc", "podref": "ns/p"}).ifname == ""
    owner = Allocation("abc", "ns/p", "net1", node="n1", pod_uid="u")
    encoded = encode_reservation(owner)
    assert encoded == {**go_spec, "node": "n1", "poduid": "u"}
    assert decode_reservation(dict(encoded)) == owner
    assert encode_reservation(Allocation("abc", "ns/p", "net1")) == go_spec


def test_go_ipamclaimref_survives_a_round_trip() -> None:
    from whereabouts_py.core.codec import (
        decode_allocations,
        decode_reservation,
        encode_allocations,
        encode_reservation,
    )

    entry = {"id": "c1", "podref": "ns/vm-0", "ifname": "net1", "ipamclaimref": "ns/vm-0-claim"}
    decoded = decode_allocations({"range": "10.0.0.0/24", "allocations": {"4": entry}})
    assert decoded[4].ipam_claim == "ns/vm-0-claim"
    assert encode_allocations(decoded) == {"4": entry}
    spec = {"containerid": "c1", "podref": "ns/vm-0", "ifname": "net1", "ipamclaimref": "x/y"}
    assert encode_reservation(decode_reservation(spec)) == spec


def _entry(container: str, node: str = "node-a") -> dict[str, str]:
    return {"id": container, "podref": f"ns/{container}", "ifname": "net1", "node": node}


def test_a_read_again_reuses_unchanged_entries_and_decodes_changed_ones() -> None:
    known = DecodedEntries()
    first = decode_allocations(
        {"allocations": {"1": _entry("a"), "2": _entry("b"), "3": _entry("c")}}, "p", known
    )
    # As json.loads gives them: new, equal dicts for unchanged entries.
    second = decode_allocations(
        {"allocations": {"1": _entry("a"), "2": _entry("b", node="node-b"), "4": _entry("d")}},
        "p",
        known,
    )
    assert second[1] is first[1]
    assert second[2] is not first[2]
    assert second[2] == Allocation("b", "ns/b", "net1", node="node-b")
    assert second[4] == Allocation("d", "ns/d", "net1", node="node-a")
    assert set(second) == {1, 2, 4}
    assert set(known.entries) == {"1", "2", "4"}
    assert decode_allocations({"allocations": {}}, "p", known) == {}
    assert known.entries == {}


def test_reusing_entries_gives_what_decoding_afresh_gives() -> None:
    known = DecodedEntries()
    specs = [
        {"allocations": {str(i): _entry(f"c{i % 3}", f"n{i % 2}") for i in range(j, j + 5)}}
        for j in range(6)
    ]
    for spec in specs:
        assert decode_allocations(spec, "p", known) == decode_allocations(spec, "p")


def test_known_entries_never_let_a_malformed_pool_through() -> None:
    known = DecodedEntries()
    decode_allocations({"allocations": {"1": _entry("a")}}, "p", known)
    with pytest.raises(StoreError, match="'id'"):
        decode_allocations({"allocations": {"1": {**_entry("a"), "id": 5}}}, "p", known)
    with pytest.raises(StoreError, match="'x1'"):
        decode_allocations({"allocations": {"x1": _entry("a")}}, "p", known)
    with pytest.raises(StoreError, match="appears twice"):
        decode_allocations({"allocations": {"1": _entry("a"), "01": _entry("a")}}, "p", known)
