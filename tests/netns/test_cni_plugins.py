"""Debian's reference CNI plugins run our shim as IPAM in real network namespaces.

The main plugin runs inside the test's node netns (``invoke(..., in_netns=)``)
and finds ``whereabouts`` through ``CNI_PATH``; the pod side is a separate
netns given as ``CNI_NETNS``. Results, the addresses on the pod's interface
and the IPPool records must all agree.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from whereabouts_py_dev.controlplane import ControlPlane
from whereabouts_py_dev.netns import LabError, ip
from whereabouts_py_dev.nodes import SimulatedNodes
from whereabouts_py_dev.runtime import Outcome, invoke, pod_args

pytestmark = [pytest.mark.kube, pytest.mark.netns]

IFNAME = "net1"
NODE_MASTER = "eth1"  # made by the node_netns fixture (tests/netns/conftest.py)


# One ICMP echo over a raw socket, run inside a pod netns with `ip netns exec`.
# The machines have no `ping` binary (no iputils), and this needs nothing else.
PING = """
import os, socket, struct, sys, time

def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF

target, ident = sys.argv[1], os.getpid() & 0xFFFF
body = struct.pack("!HH", ident, 1) + b"whereabouts-py!!"
packet = struct.pack("!BBH", 8, 0, checksum(struct.pack("!BBH", 8, 0, 0) + body)) + body
with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as raw:
    raw.sendto(packet, (target, 0))
    deadline = time.monotonic() + 2.0
    while (left := deadline - time.monotonic()) > 0:
        raw.settimeout(left)
        try:
            reply, (source, _) = raw.recvfrom(2048)
        except TimeoutError:
            break
        icmp = reply[(reply[0] & 0x0F) * 4 :]
        if source == target and icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
            print("reply from", source)
            raise SystemExit(0)
print("no reply from", target)
raise SystemExit(1)
"""


def ping(netns: str, target: str) -> str:
    """Send one ICMP echo from inside ``netns`` to ``target``; return the reply line."""
    try:
        return ip("netns", "exec", netns, sys.executable, "-c", PING, target).strip()
    except LabError as error:  # no reply: fail the test with what the probe said
        raise AssertionError(str(error)) from None


def ip_json(*argv: str) -> list[dict[str, Any]]:
    out = ip("-j", *argv).strip()
    return json.loads(out) if out else []


@dataclass(frozen=True)
class Case:
    plugin: str
    settings: dict[str, Any]
    ipam: dict[str, Any]
    pool: str
    address: str  # what the first ADD must get
    offset: str  # its key in the IPPool's allocations
    gateway: str | None = None


CASES = [
    Case(
        "bridge",
        {"bridge": "wbbr0", "isGateway": True, "ipMasq": False},
        {"range": "10.201.0.0/24", "gateway": "10.201.0.1"},
        "10.201.0.0-24",
        "10.201.0.2/24",
        "2",
        "10.201.0.1",
    ),
    Case(
        "macvlan",
        {"master": NODE_MASTER, "mode": "bridge"},
        {"range": "10.202.0.0/24"},
        "10.202.0.0-24",
        "10.202.0.1/24",
        "1",
    ),
    Case(
        "ipvlan",
        {"master": NODE_MASTER, "mode": "l2"},
        {"range": "10.203.0.0/24"},
        "10.203.0.0-24",
        "10.203.0.1/24",
        "1",
    ),
    Case(
        "ptp",
        {"ipMasq": False},
        {"range": "10.204.0.0/24", "gateway": "10.204.0.1"},
        "10.204.0.0-24",
        "10.204.0.2/24",
        "2",
        "10.204.0.1",
    ),
]

# Links each plugin reports outside the sandbox (bridge: the bridge and the host veth).
HOST_LINKS = {"bridge": 2, "macvlan": 0, "ipvlan": 0, "ptp": 1}
GATEWAY_ON_HOST = {"bridge": "10.201.0.1/24", "ptp": "10.204.0.1/32"}


def network(case: Case) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": f"{case.plugin}-net",
        "type": case.plugin,
        **case.settings,
        "ipam": {"type": "whereabouts", **case.ipam},
    }


def pools(plane: ControlPlane, namespace: str) -> dict[str, dict[str, Any]]:
    return plane.specs("ippools", namespace)


def reservations(plane: ControlPlane, namespace: str) -> dict[str, dict[str, Any]]:
    return plane.specs("overlappingrangeipreservations", namespace)


def addresses_on(netns: str, ifname: str) -> list[str]:
    """Global-scope addresses (ip/prefix) on ``ifname`` inside ``netns``."""
    return [
        f"{info['local']}/{info['prefixlen']}"
        for link in ip_json("-n", netns, "addr", "show", "dev", ifname)
        for info in link.get("addr_info", [])
        if info.get("scope") == "global"
    ]


def pod_addresses(pod_ns: str) -> list[str]:
    return addresses_on(pod_ns, IFNAME)


def pod_links(pod_ns: str) -> list[str]:
    return sorted(link["ifname"] for link in ip_json("-n", pod_ns, "link", "show"))


@dataclass
class Attachment:
    """One pod attachment: runs the main plugin in the node netns like a runtime."""

    cni_bin: Path
    nodes: SimulatedNodes
    node_ns: str
    pod_ns: str
    pod: str
    container: str

    def run(self, command: str, config: dict[str, Any]) -> Outcome:
        return invoke(
            self.cni_bin / str(config["type"]),
            command,
            config,
            container_id=self.container,
            ifname=IFNAME,
            netns=f"/var/run/netns/{self.pod_ns}",
            args=pod_args("default", self.pod, uid=f"uid-{self.pod}"),
            cni_path=self.cni_bin,
            env=self.nodes["node-a"].environment(),
            in_netns=self.node_ns,
        )


def with_prev_result(config: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """What the runtime sends for CHECK and DEL: the config plus the ADD result."""
    return {**config, "prevResult": result}


@pytest.fixture
def attach(
    cni_bin: Path,
    node_a: SimulatedNodes,
    node_netns: str,
    node_master: str,
    make_netns: Callable[[str], str],
) -> Callable[[str], Attachment]:
    assert node_master == NODE_MASTER

    def make(pod: str) -> Attachment:
        pod_ns = make_netns("pod")
        return Attachment(
            cni_bin, node_a, node_netns, pod_ns, pod, f"ctr-{pod}-{uuid.uuid4().hex[:8]}"
        )

    return make


@pytest.mark.parametrize("case", CASES, ids=[case.plugin for case in CASES])
def test_add_check_del_through_reference_plugin(
    case: Case,
    attach: Callable[[str], Attachment],
    control_plane: ControlPlane,
    namespace: str,
    kernel_link_kinds: Callable[[str], str | None],
) -> None:
    missing = kernel_link_kinds(case.plugin) if case.plugin in ("macvlan", "ipvlan") else None
    if missing is not None:
        pytest.skip(missing)
    pod = attach(f"{case.plugin}-0")
    config = network(case)

    added = pod.run("ADD", config)
    assert added.ok, (added.stdout, added.stderr)
    assert added.output is not None
    result = added.output
    assert result["cniVersion"] == "1.0.0"
    assert added.addresses() == [case.address]
    [ip_config] = result["ips"]
    assert ip_config.get("gateway") == case.gateway
    # The address belongs to the pod's net1, as the plugin reports it.
    interface = result["interfaces"][ip_config["interface"]]
    assert interface["name"] == IFNAME
    assert interface["sandbox"] == f"/var/run/netns/{pod.pod_ns}"
    # ... and it really is on net1 inside the pod netns.
    assert pod_addresses(pod.pod_ns) == [case.address]
    # ... and the IPPool records exactly this attachment.
    assert pools(control_plane, namespace)[case.pool]["allocations"] == {
        case.offset: {
            "id": pod.container,
            "podref": f"default/{pod.pod}",
            "ifname": IFNAME,
            "node": "node-a",
            "poduid": f"uid-{pod.pod}",
        }
    }
    assert set(reservations(control_plane, namespace)) == {case.address.split("/")[0]}

    # Host-side links (bridge, host veth) were made in the node netns.
    host_side = [i["name"] for i in result["interfaces"] if "sandbox" not in i]
    assert len(host_side) == HOST_LINKS[case.plugin]
    for name in host_side:
        assert ip_json("-n", pod.node_ns, "link", "show", "dev", name)[0]["ifname"] == name
    if case.gateway is not None:
        # bridge (isGateway) puts the gateway on the bridge, ptp on the host veth (/32).
        gateway_link = host_side[0]
        expected = GATEWAY_ON_HOST[case.plugin]
        assert expected in addresses_on(pod.node_ns, gateway_link)

    checked = pod.run("CHECK", with_prev_result(config, result))
    assert checked.ok, (checked.stdout, checked.stderr)
    assert checked.stdout.strip() == ""

    # CHECK really looks into the pod netns: without the address on net1 it fails.
    ip("-n", pod.pod_ns, "addr", "del", case.address, "dev", IFNAME)
    unconfigured = pod.run("CHECK", with_prev_result(config, result))
    assert unconfigured.code == 103, unconfigured.stdout
    ip("-n", pod.pod_ns, "addr", "add", case.address, "dev", IFNAME)
    assert pod.run("CHECK", with_prev_result(config, result)).ok

    deleted = pod.run("DEL", with_prev_result(config, result))
    assert deleted.ok, (deleted.stdout, deleted.stderr)
    assert IFNAME not in pod_links(pod.pod_ns)
    assert pools(control_plane, namespace)[case.pool]["allocations"] == {}
    assert reservations(control_plane, namespace) == {}

    stale = pod.run("CHECK", with_prev_result(config, result))
    # Our IPAM's "container unknown" error comes back through the main plugin.
    assert not stale.ok
    assert stale.code == 3, stale.stdout
    assert stale.output is not None
    assert stale.output["msg"] == (
        f"no address in {case.ipam['range']} is allocated to container "
        f"{pod.container} interface {IFNAME}"
    )


def test_two_bridge_pods_get_distinct_addresses_and_ping_each_other(
    attach: Callable[[str], Attachment],
    control_plane: ControlPlane,
    namespace: str,
) -> None:
    case = CASES[0]
    assert case.plugin == "bridge"
    config = network(case)
    first, second = attach("web-a"), attach("web-b")

    added_first = first.run("ADD", config)
    added_second = second.run("ADD", config)
    assert added_first.ok, (added_first.stdout, added_first.stderr)
    assert added_second.ok, (added_second.stdout, added_second.stderr)
    assert added_first.addresses() == ["10.201.0.2/24"]
    assert added_second.addresses() == ["10.201.0.3/24"]
    assert pod_addresses(first.pod_ns) == ["10.201.0.2/24"]
    assert pod_addresses(second.pod_ns) == ["10.201.0.3/24"]
    allocations = pools(control_plane, namespace)[case.pool]["allocations"]
    assert {offset: a["id"] for offset, a in allocations.items()} == {
        "2": first.container,
        "3": second.container,
    }
    # Both host-side veths hang off the same bridge in the node netns.
    bridge_ports = ip_json("-n", first.node_ns, "link", "show", "master", "wbbr0")
    assert len(bridge_ports) == 2

    assert ping(first.pod_ns, "10.201.0.3") == "reply from 10.201.0.3"
    assert ping(second.pod_ns, "10.201.0.2") == "reply from 10.201.0.2"
    # Nothing answers for an address no pod holds.
    with pytest.raises(AssertionError, match=re.escape("no reply from 10.201.0.9")):
        ping(first.pod_ns, "10.201.0.9")

    for pod, added in ((first, added_first), (second, added_second)):
        assert added.output is not None
        deleted = pod.run("DEL", with_prev_result(config, added.output))
        assert deleted.ok, (deleted.stdout, deleted.stderr)
    assert pools(control_plane, namespace)[case.pool]["allocations"] == {}
