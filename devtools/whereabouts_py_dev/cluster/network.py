"""The cluster's network: one layer-2 segment, a router, and a network namespace per node.

::

    segment netns   bridge "segment" (the switch)
      ├─ veth ── router netns   eth1: 10.59.0.1/24, fd59::1/64; routes to every pod CIDR
      └─ veth ── node netns     eth1: 10.59.0.<11+i>/24, fd59::<11+i>/64 (the node IP);
                                cni0: the bridge plugin's gateway of the node's pod CIDR

Every node's containerd and kubelet run in the node's netns, so the pods'
``eth0`` hangs off that node's ``cni0`` and ``eth1`` is what
``manifests/examples`` names as ``master``. Node netns route each other's
pod CIDRs over the segment, so pods reach pods on other nodes. The host's own
interfaces, addresses, routes and iptables rules are never touched: the
apiserver, on the host's loopback, is reached through a relay (``relay``),
at ``127.0.0.1:<port>`` and at the ``kubernetes`` Service's address
(``10.96.0.1:443``, a local address of each node netns), so hostNetwork and
pod-network clients alike find it the in-cluster way.
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

from whereabouts_py_dev.controlplane import SERVICE_CLUSTER_IP_RANGE
from whereabouts_py_dev.links import SEGMENT_BRIDGE, add_address, cable, make_switch
from whereabouts_py_dev.netns import LabError, ip

SEGMENT_V4 = ipaddress.ip_network("10.59.0.0/24")
SEGMENT_V6 = ipaddress.ip_network("fd59::/64")
ROUTER_HOST = 1
NODE_NIC = "eth1"
POD_CIDR_TEMPLATE = "10.244.{index}.0/24"
# The ``kubernetes`` Service's ClusterIP (what in-cluster clients dial): a local address
# of every node netns, where the relay serves it (there is no kube-proxy).
KUBERNETES_SERVICE_IP = str(ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE)[1])
KUBERNETES_SERVICE_PORT = 443


def node_ip(index: int) -> str:
    """The node's address on the segment (what the kubelet reports as InternalIP)."""
    return str(SEGMENT_V4[11 + index])


def node_ip6(index: int) -> str:
    return str(SEGMENT_V6[11 + index])


def router_ip() -> str:
    return str(SEGMENT_V4[ROUTER_HOST])


def pod_cidr(index: int) -> str:
    """The node's pod CIDR (host-local's range for the pods' eth0)."""
    return POD_CIDR_TEMPLATE.format(index=index + 1)


@dataclass(frozen=True)
class Topology:
    """The names of the namespaces one cluster made; ``tag`` makes them unique per cluster."""

    tag: str
    node_names: tuple[str, ...]

    @property
    def segment(self) -> str:
        return f"wbc-{self.tag}-segment"

    @property
    def router(self) -> str:
        return f"wbc-{self.tag}-router"

    def node(self, name: str) -> str:
        return f"wbc-{self.tag}-{name}"

    def all_netns(self) -> list[str]:
        """Every netns of the cluster, the ones to delete first first."""
        return [*(self.node(name) for name in self.node_names), self.router, self.segment]


def _sysctl(netns: str, key: str, value: str) -> None:
    # /proc/sys/net belongs to the netns of the process that opens it.
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "sysctl", "-q", "-w", f"{key}={value}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise LabError(f"sysctl {key}={value} in {netns} failed: {done.stderr.strip()}")


def _add_netns(name: str) -> None:
    if Path(f"/run/netns/{name}").exists():
        raise LabError(
            f"network namespace {name} already exists: a cluster with this directory is "
            "running or was not removed ('whereabouts-py-dev devcluster down --dir ...')"
        )
    ip("netns", "add", name)
    ip("-n", name, "link", "set", "lo", "up")


def build(topology: Topology) -> None:
    """Create the segment, the router and every node's netns with its ``eth1``."""
    _add_netns(topology.segment)
    make_switch(topology.segment, SEGMENT_BRIDGE)
    _add_netns(topology.router)
    cable(topology.segment, topology.router, NODE_NIC, "router")
    add_address(topology.router, NODE_NIC, f"{router_ip()}/{SEGMENT_V4.prefixlen}")
    add_address(topology.router, NODE_NIC, f"{SEGMENT_V6[ROUTER_HOST]}/{SEGMENT_V6.prefixlen}")
    for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
        _sysctl(topology.router, key, "1")
    for index, name in enumerate(topology.node_names):
        netns = topology.node(name)
        _add_netns(netns)
        cable(topology.segment, netns, NODE_NIC, f"n{index}")
        add_address(netns, NODE_NIC, f"{node_ip(index)}/{SEGMENT_V4.prefixlen}")
        add_address(netns, NODE_NIC, f"{node_ip6(index)}/{SEGMENT_V6.prefixlen}")
        ip("-n", netns, "route", "add", "default", "via", router_ip())
        ip("-n", netns, "addr", "add", f"{KUBERNETES_SERVICE_IP}/32", "dev", "lo")
        for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
            _sysctl(netns, key, "1")
        ip("-n", topology.router, "route", "add", pod_cidr(index), "via", node_ip(index))
        for other, _ in enumerate(topology.node_names):
            if other != index:
                ip("-n", netns, "route", "add", pod_cidr(other), "via", node_ip(other))


def add_router_address(topology: Topology, cidr: str) -> None:
    """Give the router an address on the segment (a secondary network's gateway)."""
    add_address(topology.router, NODE_NIC, cidr)


def remove(topology: Topology) -> list[str]:
    """Delete the cluster's netns (every link in them goes too); report what could not go."""
    problems = []
    for netns in topology.all_netns():
        if not Path(f"/run/netns/{netns}").exists():
            continue
        done = subprocess.run(
            ["ip", "netns", "del", netns], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            problems.append(f"ip netns del {netns}: {done.stderr.strip()}")
    return problems
