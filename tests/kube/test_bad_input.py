"""Every malformed input gets the right CNI error code and leaves the API untouched.

Each case runs the real shim against a real daemon and control plane. The
oddities that the Go project and existing NADs rely on are accepted instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from whereabouts_py.cni.install import install_cni
from whereabouts_py_dev.controlplane import ControlPlane
from whereabouts_py_dev.nodes import SimulatedNodes
from whereabouts_py_dev.runtime import invoke, pod_args

GOOD_IPAM: dict[str, Any] = {"type": "whereabouts", "range": "10.123.0.0/24"}


@dataclass(frozen=True)
class Case:
    name: str
    code: int
    mentions: str  # the message must name the offending key or value
    ipam: dict[str, Any] | None = None  # None: GOOD_IPAM
    env: dict[str, str | None] = field(default_factory=dict)  # None removes a variable
    stdin: str | None = None  # raw stdin instead of a generated config
    config_extra: dict[str, Any] = field(default_factory=dict)
    command: str = "ADD"


def ipam(**changes: Any) -> dict[str, Any]:
    merged = dict(GOOD_IPAM, **changes)
    return {k: v for k, v in merged.items() if v is not None}


CASES = [
    Case("missing CNI_COMMAND", 4, "CNI_COMMAND", env={"CNI_COMMAND": None}),
    Case("unknown verb", 4, "FROB", env={"CNI_COMMAND": "FROB"}),
    Case("stdin is not JSON", 6, "JSON", stdin="{not json"),
    Case("stdin is a JSON list", 6, "object", stdin="[1, 2]"),
    Case("unsupported cniVersion", 1, "9.9.9", config_extra={"cniVersion": "9.9.9"}),
    Case("no ipam section", 7, "ipam", config_extra={"ipam": None}),
    Case("ipam.type names another plugin", 7, "ipam.type", ipam=ipam(type="host-local")),
    Case("ADD without CNI_CONTAINERID", 4, "CNI_CONTAINERID", env={"CNI_CONTAINERID": None}),
    Case("ADD without CNI_IFNAME", 4, "CNI_IFNAME", env={"CNI_IFNAME": None}),
    Case("malformed CNI_ARGS", 4, "CNI_ARGS", env={"CNI_ARGS": "K8S_POD_NAME"}),
    Case("no range at all", 7, "range", ipam={"type": "whereabouts"}),
    Case("range is not a CIDR", 7, "not-a-cidr", ipam=ipam(range="not-a-cidr")),
    Case("IPv4 prefix /33", 7, "10.0.0.0/33", ipam=ipam(range="10.0.0.0/33")),
    Case("IPv6 prefix /129", 7, "fd00::/129", ipam=ipam(range="fd00::/129")),
    Case("range is a number", 7, "range", ipam=ipam(range=42)),
    Case(
        "first-last/prefix with the first address outside the CIDR",
        7,
        "10.2.1.5",
        ipam=ipam(range="10.2.1.5-10.2.0.20/24"),
    ),
    Case("unparsable gateway", 7, "gateway", ipam=ipam(gateway="10.123.0.x")),
    Case("unparsable exclude entry", 7, "bogus", ipam=ipam(exclude=["bogus"])),
    Case("exclude is not a list", 7, "exclude", ipam=ipam(exclude="10.123.0.0/28")),
    Case(
        "IPv4 exclude in an IPv6 range",
        7,
        "10.0.0.0/28",
        ipam=ipam(range="fd00:1::/64", exclude=["10.0.0.0/28"]),
    ),
    Case("exclude prefix too long", 7, "fd00::/200", ipam=ipam(exclude=["fd00::/200"])),
    Case("ipRanges is not a list", 7, "ipRanges", ipam={"type": "whereabouts", "ipRanges": {}}),
    Case(
        "ipRanges entry without range",
        7,
        "ipRanges[0]",
        ipam={"type": "whereabouts", "ipRanges": [{"exclude": []}]},
    ),
    Case(
        "ipRanges entry is not an object",
        7,
        "ipRanges[1]",
        ipam={"type": "whereabouts", "ipRanges": [{"range": "10.5.0.0/24"}, "10.6.0.0/24"]},
    ),
    Case(
        "ipRanges entry with a bad CIDR",
        7,
        "10.7.0.0/40",
        ipam={"type": "whereabouts", "ipRanges": [{"range": "10.7.0.0/40"}]},
    ),
    Case("unknown log_level", 7, "loud", ipam=ipam(log_level="loud")),
    Case(
        "negative lease duration", 7, "leader_lease_duration", ipam=ipam(leader_lease_duration=-5)
    ),
    Case(
        "enable_overlapping_ranges is a string",
        7,
        "enable_overlapping_ranges",
        ipam=ipam(enable_overlapping_ranges="yes"),
    ),
    Case("network_name is a number", 7, "network_name", ipam=ipam(network_name=7)),
    Case("routes is not a list", 7, "routes", ipam=ipam(routes={"dst": "0.0.0.0/0"})),
    Case("dns is not an object", 7, "dns", ipam=ipam(dns=["8.8.8.8"])),
    Case("CNI_ARGS IP is not an address", 7, "not-an-ip", env={"EXTRA_ARGS": "IP=not-an-ip"}),
    Case(
        "runtimeConfig.ips holds garbage",
        7,
        "runtimeConfig.ips",
        config_extra={"runtimeConfig": {"ips": ["zzz"]}},
    ),
    Case(
        "runtimeConfig.ips is not a list",
        7,
        "runtimeConfig.ips",
        config_extra={"runtimeConfig": {"ips": "10.123.0.5"}},
    ),
    Case(
        "requested address outside every range", 102, "10.9.9.9", env={"EXTRA_ARGS": "IP=10.9.9.9"}
    ),
    Case("GC without valid-attachments", 7, "cni.dev/valid-attachments", command="GC"),
    Case(
        "flat file is not JSON",
        7,
        "broken.conf",
        ipam=ipam(configuration_path="@FLATFILE@"),
    ),
]


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_cni(tmp_path_factory.mktemp("cni-bin"))


@pytest.fixture(scope="module")
def bad_input_nodes(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SimulatedNodes, str]]:
    namespace = "bad-input"
    control_plane.kubectl("create", "namespace", namespace)
    directory = tmp_path_factory.mktemp("nodes")
    with SimulatedNodes(control_plane, directory, ["node-a"], namespace) as nodes:
        yield nodes, namespace


def api_objects(plane: ControlPlane, namespace: str) -> str:
    listed = plane.kubectl(
        "get", "ippools,overlappingrangeipreservations", "-n", namespace, "-o", "json"
    ).stdout
    return json.dumps(
        sorted(
            (item["kind"], item["metadata"]["name"], item["metadata"]["resourceVersion"])
            for item in json.loads(listed)["items"]
        )
    )


def run_case(
    case: Case, shim: Path, nodes: SimulatedNodes, tmp_path: Path
) -> tuple[int, dict[str, Any] | None, str]:
    ipam_section = dict(case.ipam if case.ipam is not None else GOOD_IPAM)
    if ipam_section.get("configuration_path") == "@FLATFILE@":
        flat = tmp_path / "broken.conf"
        flat.write_text("{this is not json")
        ipam_section["configuration_path"] = str(flat)
    config: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": "badnet",
        "type": "macvlan",
        "ipam": ipam_section,
    }
    for key, value in case.config_extra.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    env: dict[str, str] = dict(nodes["node-a"].environment())
    args = pod_args("default", "victim")
    extra_args = case.env.get("EXTRA_ARGS")
    if extra_args:
        args = f"{args};{extra_args}"
    variables: dict[str, str | None] = {
        "CNI_COMMAND": case.command,
        "CNI_CONTAINERID": "ctr-bad",
        "CNI_IFNAME": "net1",
        "CNI_NETNS": "/var/run/netns/none",
        "CNI_ARGS": args,
    }
    variables.update({k: v for k, v in case.env.items() if k != "EXTRA_ARGS"})
    outcome = invoke(
        shim,
        variables.get("CNI_COMMAND") or "",
        case.stdin if case.stdin is not None else config,
        container_id=variables.get("CNI_CONTAINERID") or "",
        ifname=variables.get("CNI_IFNAME") or "",
        netns=variables.get("CNI_NETNS") or "",
        args=variables.get("CNI_ARGS") or "",
        env=env,
    )
    return outcome.returncode, outcome.output, outcome.stdout + outcome.stderr


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_malformed_input_gets_the_right_error(
    case: Case,
    shim: Path,
    bad_input_nodes: tuple[SimulatedNodes, str],
    control_plane: ControlPlane,
    tmp_path: Path,
) -> None:
    nodes, namespace = bad_input_nodes
    before = api_objects(control_plane, namespace)
    returncode, output, everything = run_case(case, shim, nodes, tmp_path)
    assert returncode != 0
    assert output is not None, everything
    assert output["code"] == case.code, output
    text = f"{output.get('msg', '')} {output.get('details', '')}"
    assert case.mentions in text, output
    assert "Traceback" not in everything
    assert api_objects(control_plane, namespace) == before


ACCEPTED = [
    ("gateway outside the range", ipam(gateway="10.200.0.1")),
    ("range_start below the usable addresses", ipam(range_start="10.122.0.1")),
    ("inverted range_start/range_end", ipam(range_start="10.123.0.50", range_end="10.123.0.10")),
    ("unknown key", ipam(frobnicate=True)),
    ("removed etcd keys", ipam(datastore="etcd", etcd_host="127.0.0.1:2379")),
]


@pytest.mark.parametrize("config_ipam", [c[1] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_oddities_existing_nads_rely_on_are_accepted(
    config_ipam: dict[str, Any],
    shim: Path,
    bad_input_nodes: tuple[SimulatedNodes, str],
) -> None:
    nodes, _namespace = bad_input_nodes
    config = {"cniVersion": "1.0.0", "name": "oddnet", "type": "macvlan", "ipam": config_ipam}
    env = nodes["node-a"].environment()
    common = {
        "container_id": "ctr-odd",
        "ifname": "net1",
        "netns": "/var/run/netns/none",
        "args": pod_args("default", "odd"),
        "env": env,
    }
    added = invoke(shim, "ADD", config, **common)  # type: ignore[arg-type]
    try:
        assert added.ok, added.stdout
        (address,) = added.addresses()
        assert address.startswith("10.123.0.")
        if "range_start" in config_ipam and config_ipam["range_start"] == "10.123.0.50":
            assert address == "10.123.0.50/24"
    finally:
        deleted = invoke(shim, "DEL", config, **common)  # type: ignore[arg-type]
    assert deleted.ok, deleted.stdout
