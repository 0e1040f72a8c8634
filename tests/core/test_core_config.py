"""Parsing the ipam section, the flat file merge, CNI_ARGS and requested addresses."""

from __future__ import annotations

from typing import Any

import pytest
from netaddr import IPAddress

from whereabouts_py.core.config import (
    FLAT_FILE_CANDIDATES,
    IPAMConfig,
    flat_file_candidates,
    merge_flat_file,
    parse_cni_args,
    parse_ipam_config,
    parse_network_config,
    requested_addresses,
)
from whereabouts_py.errors import ConfigError, InvalidEnvironmentError

EVERY_KEY: dict[str, Any] = {
    "type": "whereabouts",
    "range": "192.168.2.0/24",
    "range_start": "192.168.2.10",
    "range_end": "192.168.2.100",
    "exclude": ["192.168.2.16/28", "192.168.2.50"],
    "ipRanges": [
        {"range": "2001:db8::/64", "range_start": "2001:db8::10", "exclude": ["2001:db8::20"]},
        {"range": "10.1.0.5-10.1.0.9/24"},
    ],
    "gateway": "192.168.2.1",
    "network_name": "storage",
    "enable_overlapping_ranges": False,
    "kubernetes": {"kubeconfig": "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig"},
    "configuration_path": "/etc/whereabouts.conf",
    "log_file": "/var/log/whereabouts.log",
    "log_level": "Debug",
    "leader_lease_duration": 3000,
    "leader_renew_deadline": 2000,
    "leader_retry_period": 700,
    "reconciler_cron_expression": "30 4 * * *",
    "node_slice_size": "/28",
    "sleep_for_race": 2,
    "routes": [{"dst": "0.0.0.0/0"}],
    "dns": {"nameservers": ["10.0.0.10"]},
    "addresses": [{"address": "10.9.0.1/24"}],
    "daemon_socket": "/run/x.sock",
}


def test_every_key_is_accepted() -> None:
    config = parse_ipam_config(EVERY_KEY)
    assert config.warnings == ()
    assert [r.cidr for r in config.ranges] == ["192.168.2.0/24", "2001:db8::/64", "10.1.0.0/24"]
    top, v6, dashed = config.ranges
    assert (top.first_offset, top.last_offset) == (10, 100)
    assert not top.is_assignable(IPAddress("192.168.2.50"))
    assert not top.is_assignable(IPAddress("192.168.2.20"))
    assert v6.first_offset == 0x10
    assert not v6.is_assignable(IPAddress("2001:db8::20"))
    assert (dashed.first_offset, dashed.last_offset) == (5, 9)
    assert config.gateway == IPAddress("192.168.2.1")
    assert config.network_name == "storage"
    assert config.enable_overlapping_ranges is False
    assert config.kubeconfig == "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig"
    assert config.configuration_path == "/etc/whereabouts.conf"
    assert config.log_file == "/var/log/whereabouts.log"
    assert config.log_level == "debug"
    assert (config.leader_lease_duration, config.leader_renew_deadline) == (3000, 2000)
    assert config.leader_retry_period == 700
    assert config.reconciler_cron_expression == "30 4 * * *"
    assert config.node_slice_size == "/28"
    assert config.sleep_for_race == 2
    assert config.routes == [{"dst": "0.0.0.0/0"}]
    assert config.dns == {"nameservers": ["10.0.0.10"]}
    assert config.addresses == [{"address": "10.9.0.1/24"}]
    assert config.daemon_socket == "/run/x.sock"


def test_defaults() -> None:
    config = parse_ipam_config({"type": "whereabouts", "range": "10.0.0.0/24"})
    assert config == IPAMConfig(ranges=config.ranges)
    assert config.enable_overlapping_ranges is True
    assert (config.leader_lease_duration, config.leader_renew_deadline) == (1500, 1000)
    assert config.leader_retry_period == 500
    assert config.network_name is None
    assert config.log_level is None


def test_zero_lease_settings_mean_default_like_go() -> None:
    config = parse_ipam_config({"range": "10.0.0.0/24", "leader_lease_duration": 0})
    assert config.leader_lease_duration == 1500


def test_passthrough_values_are_copied() -> None:
    routes = [{"dst": "0.0.0.0/0"}]
    config = parse_ipam_config({"range": "10.0.0.0/24", "routes": routes})
    routes[0]["dst"] = "changed"
    assert config.routes == [{"dst": "0.0.0.0/0"}]


def test_etcd_keys_are_ignored_with_warning() -> None:
    config = parse_ipam_config(
        {
            "range": "10.0.0.0/24",
            "datastore": "etcd",
            "etcd_host": "127.0.0.1:2379",
            "etcd_username": "u",
        }
    )
    assert len(config.warnings) == 3
    assert all("etcd" in w for w in config.warnings)


def test_unknown_keys_warn() -> None:
    config = parse_ipam_config(
        {
            "range": "10.0.0.0/24",
            "frobnicate": 1,
            "kubernetes": {"kubeconfig": "/k", "extra": 1, "k8s_api_root": "https://x"},
            "ipRanges": [{"range": "10.1.0.0/24", "bogus": True}],
        }
    )
    assert any(w.startswith("frobnicate:") for w in config.warnings)
    assert any(w.startswith("kubernetes.extra:") for w in config.warnings)
    assert any(w.startswith("ipRanges[0].bogus:") for w in config.warnings)
    assert config.k8s_api_root == "https://x"


def test_range_warnings_are_collected() -> None:
    config = parse_ipam_config(
        {"range": "10.0.0.0/24", "range_start": "10.5.0.1", "gateway": "172.16.0.1"}
    )
    assert any("range_start" in w for w in config.warnings)
    assert any("gateway" in w for w in config.warnings)


def test_top_level_exclude_does_not_apply_to_ip_ranges() -> None:
    config = parse_ipam_config(
        {
            "range": "10.0.0.0/24",
            "exclude": ["10.0.0.0/28"],
            "ipRanges": [{"range": "10.0.0.0/24"}],
        }
    )
    top, entry = config.ranges
    assert top.lowest_free(set()) == 16
    assert entry.lowest_free(set()) == 1
    assert any("more than once" in w for w in config.warnings)


def test_top_level_exclude_without_range_warns() -> None:
    config = parse_ipam_config({"exclude": ["10.0.0.0/28"], "ipRanges": [{"range": "10.0.0.0/24"}]})
    assert len(config.ranges) == 1
    assert config.ranges[0].lowest_free(set()) == 1
    assert any(w.startswith("exclude:") for w in config.warnings)


def test_gateway_is_skipped_in_every_range_containing_it() -> None:
    config = parse_ipam_config(
        {"gateway": "10.0.0.1", "ipRanges": [{"range": "10.0.0.0/24"}, {"range": "fd00::/64"}]}
    )
    assert config.ranges[0].lowest_free(set()) == 2
    assert config.ranges[1].lowest_free(set()) == 1


def test_parse_network_config() -> None:
    config = parse_network_config({"name": "n", "ipam": {"range": "10.0.0.0/24"}})
    assert config.ranges[0].cidr == "10.0.0.0/24"
    with pytest.raises(ConfigError) as caught:
        parse_network_config({"name": "n"})
    assert caught.value.key == "ipam"


MALFORMED: list[tuple[dict[str, Any], str]] = [
    ({"range": "10.0.0.0/33"}, "range"),
    ({"range": "not-a-cidr"}, "range"),
    ({"range": 10}, "range"),
    ({"range": "10.0.0.5-10.1.0.9/24"}, "range"),
    ({"range": "bogus-10.0.0.9/24"}, "range"),
    ({"range": "10.0.0.0/24", "gateway": "10.0.0.300"}, "gateway"),
    ({"range": "10.0.0.0/24", "gateway": 5}, "gateway"),
    ({"range": "10.0.0.0/24", "exclude": ["nope"]}, "exclude[0]"),
    ({"range": "10.0.0.0/24", "exclude": "10.0.0.0/28"}, "exclude"),
    ({"range": "fd00::/64", "exclude": ["10.0.0.0/28"]}, "exclude[0]"),
    ({"range": "10.0.0.0/24", "range_start": 5}, "range_start"),
    ({}, "range"),
    ({"range": ""}, "range"),
    ({"ipRanges": []}, "range"),
    ({"ipRanges": "10.0.0.0/24"}, "ipRanges"),
    ({"ipRanges": [{"range": "10.0.0.0/24"}, "10.1.0.0/24"]}, "ipRanges[1]"),
    ({"ipRanges": [{"range_start": "10.0.0.5"}]}, "ipRanges[0].range"),
    ({"ipRanges": [{"range": "10.0.0.0/24"}, {"range": 7}]}, "ipRanges[1].range"),
    ({"ipRanges": [{"range": "10.0.0.0/24", "exclude": ["x"]}]}, "ipRanges[0].exclude[0]"),
    ({"ipRanges": [{"range": "10.0.0.0/24", "exclude": "x"}]}, "ipRanges[0].exclude"),
    ({"ipRanges": [{"range": "fd00::/64", "exclude": ["10.0.0.1"]}]}, "ipRanges[0].exclude[0]"),
    ({"ipRanges": [{"range": "10.0.0.0/24", "range_end": []}]}, "ipRanges[0].range_end"),
    ({"range": "10.0.0.0/24", "log_level": "trace"}, "log_level"),
    ({"range": "10.0.0.0/24", "log_level": 3}, "log_level"),
    ({"range": "10.0.0.0/24", "leader_lease_duration": -1}, "leader_lease_duration"),
    ({"range": "10.0.0.0/24", "leader_renew_deadline": "1000"}, "leader_renew_deadline"),
    ({"range": "10.0.0.0/24", "leader_retry_period": True}, "leader_retry_period"),
    ({"range": "10.0.0.0/24", "leader_retry_period": 1.5}, "leader_retry_period"),
    ({"range": "10.0.0.0/24", "sleep_for_race": -3}, "sleep_for_race"),
    ({"range": "10.0.0.0/24", "enable_overlapping_ranges": "yes"}, "enable_overlapping_ranges"),
    ({"range": "10.0.0.0/24", "kubernetes": "/kubeconfig"}, "kubernetes"),
    ({"range": "10.0.0.0/24", "kubernetes": {"kubeconfig": 1}}, "kubernetes.kubeconfig"),
    ({"range": "10.0.0.0/24", "network_name": 1}, "network_name"),
    ({"range": "10.0.0.0/24", "node_slice_size": [28]}, "node_slice_size"),
    ({"range": "10.0.0.0/24", "routes": {"dst": "x"}}, "routes"),
    ({"range": "10.0.0.0/24", "dns": []}, "dns"),
    ({"range": "10.0.0.0/24", "daemon_socket": 1}, "daemon_socket"),
]


@pytest.mark.parametrize(("ipam", "key"), MALFORMED)
def test_malformed_configs_name_the_key(ipam: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_ipam_config(ipam)
    assert caught.value.key == key
    assert key in str(caught.value)
    if key in ipam and ipam[key] not in (None, ""):
        assert str(ipam[key]) in str(caught.value)


def test_merge_flat_file_fills_missing_nad_values_win() -> None:
    nad = {"range": "10.0.0.0/24", "log_level": "error", "log_file": "", "kubernetes": {}}
    flat = {
        "datastore": "kubernetes",
        "kubernetes": {"kubeconfig": "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig"},
        "log_level": "debug",
        "log_file": "/var/log/w.log",
        "reconciler_cron_expression": "30 4 * * *",
    }
    merged = merge_flat_file(nad, flat)
    assert merged == {
        "range": "10.0.0.0/24",
        "log_level": "error",
        "log_file": "/var/log/w.log",
        "kubernetes": {"kubeconfig": "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig"},
        "datastore": "kubernetes",
        "reconciler_cron_expression": "30 4 * * *",
    }
    assert nad["kubernetes"] == {}
    assert (
        merge_flat_file({"enable_overlapping_ranges": False}, {"enable_overlapping_ranges": True})[
            "enable_overlapping_ranges"
        ]
        is False
    )


def test_flat_file_candidates() -> None:
    assert FLAT_FILE_CANDIDATES == (
        "/etc/kubernetes/cni/net.d/whereabouts.d/whereabouts.conf",
        "/etc/cni/net.d/whereabouts.d/whereabouts.conf",
        "/host/etc/cni/net.d/whereabouts.d/whereabouts.conf",
    )
    assert flat_file_candidates(None) == list(FLAT_FILE_CANDIDATES)
    assert flat_file_candidates("/x.conf") == ["/x.conf", *FLAT_FILE_CANDIDATES]


def test_parse_cni_args() -> None:
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=u;"
    assert parse_cni_args(args) == {
        "IgnoreUnknown": "1",
        "K8S_POD_NAMESPACE": "default",
        "K8S_POD_NAME": "web-0",
        "K8S_POD_UID": "u",
    }
    assert parse_cni_args("") == {}


@pytest.mark.parametrize("args", ["K8S_POD_NAME", "A=1;novalue", "=x"])
def test_malformed_cni_args(args: str) -> None:
    with pytest.raises(InvalidEnvironmentError) as caught:
        parse_cni_args(args)
    assert "CNI_ARGS" in str(caught.value)


def test_requested_addresses() -> None:
    found = requested_addresses(
        "K8S_POD_NAME=a;IP=10.0.0.5/24, fd00::5",
        {"ips": ["10.0.0.5", "10.0.0.6/24"]},
    )
    assert found == [IPAddress("10.0.0.5"), IPAddress("fd00::5"), IPAddress("10.0.0.6")]
    assert requested_addresses("", None) == []
    assert requested_addresses("K8S_POD_NAME=a", {"portMappings": []}) == []


@pytest.mark.parametrize(
    ("cni_args", "runtime_config", "key"),
    [
        ("IP=10.0.0.300", None, "CNI_ARGS IP"),
        ("IP=10.0.0.1,bogus", None, "CNI_ARGS IP"),
        ("IP=10.0.0.1/abc", None, "CNI_ARGS IP"),
        ("", {"ips": "10.0.0.1"}, "runtimeConfig.ips"),
        ("", {"ips": ["nope"]}, "runtimeConfig.ips"),
        ("", {"ips": [5]}, "runtimeConfig.ips"),
    ],
)
def test_malformed_requested_addresses(
    cni_args: str, runtime_config: dict[str, Any] | None, key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        requested_addresses(cni_args, runtime_config)
    assert caught.value.key == key
