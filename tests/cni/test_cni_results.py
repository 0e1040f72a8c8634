"""Results in the format of each supported cniVersion."""

from __future__ import annotations

from typing import Any

import pytest

from whereabouts_py.cni.results import SUPPORTED_VERSIONS, render
from whereabouts_py.errors import WhereaboutsError

NEUTRAL: dict[str, Any] = {
    "ips": [
        {"address": "192.168.2.2/24", "gateway": "192.168.2.1"},
        {"address": "fd00:2::2/64", "gateway": ""},
    ],
    "routes": [
        {"dst": "10.0.0.0/8", "gw": "192.168.2.1", "mtu": 1400, "priority": 0},
        {"dst": "fd00::/8"},
    ],
    "dns": {"nameservers": ["192.168.2.1"], "search": [], "domain": "example.org"},
}


def expected(cni_version: str) -> dict[str, Any]:
    legacy = cni_version.startswith("0.")
    first_route: dict[str, Any] = {"dst": "10.0.0.0/8", "gw": "192.168.2.1"}
    if cni_version == "1.1.0":
        first_route |= {"mtu": 1400, "priority": 0}
    return {
        "cniVersion": cni_version,
        "ips": [
            ({"version": "4"} if legacy else {})
            | {"address": "192.168.2.2/24", "gateway": "192.168.2.1"},
            ({"version": "6"} if legacy else {}) | {"address": "fd00:2::2/64"},
        ],
        "routes": [first_route, {"dst": "fd00::/8"}],
        "dns": {"nameservers": ["192.168.2.1"], "domain": "example.org"},
    }


@pytest.mark.parametrize("cni_version", SUPPORTED_VERSIONS)
def test_render(cni_version: str) -> None:
    assert render(NEUTRAL, cni_version) == expected(cni_version)


@pytest.mark.parametrize("cni_version", SUPPORTED_VERSIONS)
def test_add_prints_the_result_in_the_requested_version(
    run: Any,
    daemon: Any,
    network_config: dict[str, Any],
    attachment_env: dict[str, str],
    cni_version: str,
) -> None:
    daemon.answer_result(NEUTRAL)
    network_config["cniVersion"] = cni_version
    answer = run("ADD", network_config, attachment_env, socket_path=daemon.path)
    assert answer.returncode == 0, answer
    assert answer.answer == expected(cni_version)
    assert all(("version" in ip) == cni_version.startswith("0.") for ip in answer.answer["ips"])


def test_empty_parts_are_left_out() -> None:
    result = {"ips": [{"address": "10.0.0.2/24"}], "routes": [], "dns": {}}
    assert render(result, "1.0.0") == {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]}


def test_no_interfaces_even_if_the_daemon_sends_some() -> None:
    result = {"interfaces": [{"name": "net1"}], "ips": [{"address": "10.0.0.2/24"}]}
    assert "interfaces" not in render(result, "0.4.0")


@pytest.mark.parametrize(
    "result",
    [
        {"ips": "10.0.0.2/24"},
        {"ips": [{"address": "10.0.0.2"}]},
        {"ips": [{"gateway": "10.0.0.1"}]},
        {"routes": {"dst": "0.0.0.0/0"}},
        {"dns": ["10.0.0.1"]},
    ],
)
def test_malformed_result_is_our_error(result: dict[str, Any]) -> None:
    with pytest.raises(WhereaboutsError, match="malformed result"):
        render(result, "1.0.0")


def test_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError, match=r"0\.2\.0"):
        render({"ips": []}, "0.2.0")
