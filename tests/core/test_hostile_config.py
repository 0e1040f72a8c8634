"""Hostile and odd IPAM configurations: every key checked before anything is allocated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from whereabouts_py.core.config import (
    FLAT_FILE_CANDIDATES,
    flat_file_candidates,
    merge_flat_file,
    parse_ipam_config,
    release_view,
)
from whereabouts_py.errors import ConfigError
from whereabouts_py.store.flatfile import read_flat_file

BASE: dict[str, Any] = {"type": "whereabouts", "range": "10.1.0.0/24"}


def refused(changes: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        parse_ipam_config({**BASE, **changes})
    assert raised.value.code == 7
    return raised.value


@pytest.mark.parametrize(
    "network_name",
    ["x/../10.50.0.0-24?", "Upper", "has space", "dot.", "-lead", "trail-", "a" * 190, "ü"],
)
def test_network_name_must_be_usable_in_object_names(network_name: str) -> None:
    error = refused({"network_name": network_name})
    assert error.msg.startswith(f"invalid ipam config: network_name={network_name[:100]}")
    assert "DNS-1123" in error.details


@pytest.mark.parametrize("network_name", ["storage", "net-1.blue", "a" * 189])
def test_valid_network_names_are_kept(network_name: str) -> None:
    assert parse_ipam_config({**BASE, "network_name": network_name}).network_name == network_name


def test_a_range_whose_pool_name_kubernetes_refuses_is_a_config_error() -> None:
    # "::/120" would be the IPPool "---120": refused before any request.
    error = refused({"range": "::/120"})
    assert "range=::/120" in error.msg and "'---120'" in error.msg
    # With a network name the names are valid again.
    config = parse_ipam_config({"range": "::/120", "network_name": "v6"})
    assert config.network_name == "v6"


@pytest.mark.parametrize(
    ("routes", "key"),
    [
        ([1], "routes[0]"),
        ([None], "routes[0]"),
        (["0.0.0.0/0"], "routes[0]"),
        ([[{"dst": "0.0.0.0/0"}]], "routes[0]"),
        ("0.0.0.0/0", "routes"),
        ([{"gw": "10.1.0.1"}], "routes[0].dst"),
        ([{"dst": "nonsense"}], "routes[0].dst"),
        ([{"dst": "10.0.0.0/33"}], "routes[0].dst"),
        ([{"dst": 5}], "routes[0].dst"),
        ([{"dst": "0.0.0.0/0"}, {"dst": "10.0.0.0/8", "gw": "x"}], "routes[1].gw"),
        ([{"dst": "0.0.0.0/0", "mtu": "1500"}], "routes[0].mtu"),
        ([{"dst": "0.0.0.0/0", "table": True}], "routes[0].table"),
        ([{"dst": "10.0.0.0/" + "9" * 5000}], "routes[0].dst"),
    ],
)
def test_routes_are_validated(routes: Any, key: str) -> None:
    assert refused({"routes": routes}).msg.startswith(f"invalid ipam config: {key}=")


def test_valid_routes_pass_through_unchanged() -> None:
    routes = [
        {"dst": "0.0.0.0/0", "gw": "10.1.0.1"},
        {"dst": "fd00::/64", "mtu": 1400, "priority": 10, "table": 100, "scope": 0},
        {"dst": "192.168.0.0/16", "gw": None, "extra": "kept"},
    ]
    assert parse_ipam_config({**BASE, "routes": routes}).routes == routes


@pytest.mark.parametrize(
    ("dns", "key"),
    [
        ([], "dns"),
        ("8.8.8.8", "dns"),
        ({"nameservers": "8.8.8.8"}, "dns.nameservers"),
        ({"nameservers": [1]}, "dns.nameservers"),
        ({"search": [None]}, "dns.search"),
        ({"options": {"ndots": 5}}, "dns.options"),
        ({"domain": ["a"]}, "dns.domain"),
    ],
)
def test_dns_is_validated(dns: Any, key: str) -> None:
    assert refused({"dns": dns}).msg.startswith(f"invalid ipam config: {key}=")


@pytest.mark.parametrize(
    ("addresses", "key"),
    [
        ({"address": "10.9.0.1/24"}, "addresses"),
        (["10.9.0.1/24"], "addresses[0]"),
        ([{"address": "foo"}], "addresses[0].address"),
        ([{"address": "10.9.0.1"}], "addresses[0].address"),
        ([{"address": "10.9.0.1/40"}], "addresses[0].address"),
        ([{}], "addresses[0].address"),
        ([{"address": "10.9.0.1/24", "gateway": "gw"}], "addresses[0].gateway"),
    ],
)
def test_addresses_are_validated(addresses: Any, key: str) -> None:
    assert refused({"addresses": addresses}).msg.startswith(f"invalid ipam config: {key}=")


def test_leading_zeroes_are_read_as_whereabouts_reads_them_at_the_top_level() -> None:
    config = parse_ipam_config(
        {
            "range": "00192.00168.1.0/24",
            "range_start": "192.168.001.10",
            "range_end": "0192.168.1.020",
            "exclude": ["192.168.1.016/30"],
            "gateway": "192.168.1.01",
            "addresses": [{"address": "010.9.0.1/24"}],
        }
    )
    assert config.warnings == ()
    (address_range,) = config.ranges
    assert address_range.cidr == "192.168.1.0/24"
    assert (address_range.first_offset, address_range.last_offset) == (10, 20)
    assert str(config.gateway) == "192.168.1.1"
    first = int(address_range.network.first)
    assert address_range.excluded == ((first + 16, first + 19),)


def test_ip_ranges_entries_take_leading_zeroes_in_the_range_only() -> None:
    config = parse_ipam_config({"ipRanges": [{"range": "010.2.0.0/24"}]})
    assert [r.cidr for r in config.ranges] == ["10.2.0.0/24"]


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"range": "10.2.0.0/24", "range_start": "foo"}, "ipRanges[0].range_start"),
        ({"range": "10.2.0.0/24", "range_end": "foo"}, "ipRanges[0].range_end"),
        ({"range": "10.2.0.0/24", "range_start": "010.2.0.5"}, "ipRanges[0].range_start"),
        ({"range": "10.2.0.0/24", "range_end": "10.2.0.0100"}, "ipRanges[0].range_end"),
    ],
)
def test_ip_ranges_bounds_are_strict(entry: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_ipam_config({"ipRanges": [entry]})
    assert raised.value.msg.startswith(f"invalid ipam config: {key}=")


def test_top_level_bounds_that_do_not_parse_are_still_ignored() -> None:
    config = parse_ipam_config({**BASE, "range_start": "foo"})
    assert config.ranges[0].first_offset == 1
    assert any("range_start=foo" in warning for warning in config.warnings)


def test_configuration_path_that_cannot_name_a_file() -> None:
    long_path = "/etc/" + "x" * 300
    error = refused({"configuration_path": long_path})
    assert "configuration_path=" in error.msg and "cannot name a file" in error.msg
    assert flat_file_candidates(long_path) == list(FLAT_FILE_CANDIDATES)
    assert flat_file_candidates("/etc/a\0b") == list(FLAT_FILE_CANDIDATES)


def test_release_view_keeps_what_a_release_needs() -> None:
    ipam = {
        **BASE,
        "network_name": "blue",
        "routes": [1],
        "dns": "x",
        "log_level": "loud",
        "leader_lease_duration": -1,
        "configuration_path": "/" + "y" * 300,
    }
    view = release_view(ipam)
    assert view == {"type": "whereabouts", "range": "10.1.0.0/24", "network_name": "blue"}
    assert parse_ipam_config(view).network_name == "blue"


@pytest.mark.parametrize("value", [2**31, 1e308])
def test_lease_settings_fit_a_lease(value: Any) -> None:
    assert "leader_lease_duration" in refused({"leader_lease_duration": value}).msg


def test_long_values_are_shortened_in_messages() -> None:
    error = refused({"network_name": "A" * 100_000})
    assert len(error.msg) < 500 and "100000 characters" in error.msg


def test_a_deeply_nested_flat_file_is_a_config_error(tmp_path: Path) -> None:
    deep: Any = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ConfigError) as raised:
        merge_flat_file(BASE, {"routes": deep})
    assert "nests JSON deeper" in raised.value.msg
    flat = tmp_path / "whereabouts.conf"
    flat.write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(ConfigError) as unreadable:
        read_flat_file(str(flat))
    assert "configuration_path" in unreadable.value.msg


def test_offending_values_are_shown_briefly_whatever_their_shape() -> None:
    deep: Any = []
    for _ in range(10_000):
        deep = [deep]
    assert (
        refused({"routes": deep}).msg
        == 'invalid ipam config: routes[0]=[[[[...]]]]: must be an object like {"dst": "0.0.0.0/0"}'
    )
    wide = refused({"dns": {"nameservers": list(range(1000))}})
    assert "[0, 1, 2, 3, 4, 5, 6, 7, ...]" in wide.msg
    assert len(wide.msg) < 300
