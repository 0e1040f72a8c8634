"""A two-node bare-metal lab in network namespaces, attached by the real Multus.

Every link lives in network namespaces the lab creates; the host's own
interfaces, addresses and routes are never touched::

    segment netns   bridge "segment": the lab's switch (one layer-2 segment)
      ├─ veth ── node-a netns   eth1 (parent of macvlan), eth2 (port of br0),
      │                         eth3 (parent of ipvlan)
      ├─ veth ── node-b netns   the same three NICs
      └─ veth ── router netns   eth1, holding each network's gateway address
    pod netns (one per pod)     eth0 from the default network (ptp + host-local,
                                a /24 per node), net1... from Multus

Each simulated node has its own whereabouts-py daemon (``SimulatedNodes``) and
runs Multus the way a container runtime would: inside the node's netns, with
``CNI_*`` set, the pod's netns as ``CNI_NETNS`` and a CNI bin dir holding our
shim as ``whereabouts`` next to the reference plugins. Three things make one
machine look like two nodes:

* The shim finds its node's daemon through ``WHEREABOUTS_PY_SOCKET`` in the
  environment Multus runs with; Multus passes its environment on to the
  plugins it executes, and those to their IPAM plugin.
* A node has its own disk: each node's Multus runs in a private mount
  namespace where ``/var/lib/cni`` (host-local's leases, libcni's cache) is
  that node's own directory, and Multus' ``cniDir`` is per node too.
* The apiserver listens on the host's loopback, which a node netns cannot
  reach: a relay (``relay``) makes it reachable inside each node netns.

The parts live beside this module: ``netns`` (namespaces, ``ip``, probes),
``links`` (the segment's switch and cables), ``ping``, ``relay`` and
``pods`` (Pod objects and what is inside their sandboxes).

``Lab`` is a context manager: leaving it stops the daemons and the relay and
deletes every namespace it made (which destroys every link in them), also
when the block failed.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from whereabouts_py.cni.install import install_cni
from whereabouts_py_dev.controlplane import ControlPlane
from whereabouts_py_dev.links import SEGMENT_BRIDGE, add_address, cable, make_switch
from whereabouts_py_dev.multus import ensure_multus
from whereabouts_py_dev.netns import LabError, end_processes_in, ip, remove_stale_labs
from whereabouts_py_dev.nodes import SimulatedNodes
from whereabouts_py_dev.ping import ping
from whereabouts_py_dev.pods import (
    LabPod,
    addresses,
    network_status,
    pod_object,
    wait_addresses_usable,
)
from whereabouts_py_dev.relay import ApiRelay
from whereabouts_py_dev.runtime import CNI_BIN_DIR, Outcome, invoke, pod_args

__all__ = ["Lab", "LabError", "LabNode", "LabPod", "examples_dir"]

MACVLAN_PARENT = "eth1"
BRIDGE_PORT = "eth2"
NODE_BRIDGE = "br0"
IPVLAN_PARENT = "eth3"
NODE_NICS = (MACVLAN_PARENT, BRIDGE_PORT, IPVLAN_PARENT)
ROUTER_NIC = "eth1"
POD_DEFAULT_IFNAME = "eth0"
# Where each node's own state directory is bind-mounted for its Multus.
NODE_DISK_MOUNTPOINT = Path("/var/lib/cni")
# The reference plugins that Multus' delegates may name.
REFERENCE_PLUGINS = ("bridge", "host-local", "ipvlan", "macvlan", "ptp", "sbr", "static")


def examples_dir() -> Path:
    """The repository's ``manifests/examples`` (the NetworkAttachmentDefinitions)."""
    return Path(__file__).resolve().parents[2] / "manifests" / "examples"


@dataclass(frozen=True)
class LabNode:
    """A simulated node: its netns, its state directory and its Multus."""

    name: str
    index: int
    netns: str
    directory: Path

    @property
    def disk(self) -> Path:
        """What this node's Multus (and the plugins it runs) see as /var/lib/cni."""
        return self.directory / "var-lib-cni"

    @property
    def multus(self) -> Path:
        """The executable the runtime calls: Multus in the node's own mount namespace."""
        return self.directory / "bin" / "multus"

    @property
    def default_subnet(self) -> str:
        """The node's /24 of the default (eth0) network, as a CNI like flannel would split it."""
        return f"10.244.{self.index + 1}.0/24"


@dataclass
class Lab:
    """Two (or more) nodes, a router and pods on one layer-2 segment, all in netns.

    ``pool_namespace`` is where the node daemons keep IPPools (the install
    namespace). ``directory`` holds every node's state; it is the caller's.
    """

    plane: ControlPlane
    directory: Path
    pool_namespace: str = "kube-system"
    node_names: Sequence[str] = ("node-a", "node-b")
    identity: str = "admin"
    nodes: dict[str, LabNode] = field(default_factory=dict, init=False)
    pods: dict[str, LabPod] = field(default_factory=dict, init=False)
    # Names start with the owner's pid, so a later lab can remove what a killed one left.
    tag: str = field(default_factory=lambda: f"{os.getpid()}-{uuid.uuid4().hex[:4]}", init=False)
    segment_netns: str = field(default="", init=False)
    router_netns: str = field(default="", init=False)
    _netns: list[str] = field(default_factory=list, init=False, repr=False)
    _daemons: SimulatedNodes | None = field(default=None, init=False, repr=False)
    _relay: ApiRelay | None = field(default=None, init=False, repr=False)
    _multus_binary: Path | None = field(default=None, init=False, repr=False)

    # --- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> Lab:
        try:
            remove_stale_labs()
            self._multus_binary = ensure_multus()
            self._install_plugins()
            self._build_topology()
            self._relay = ApiRelay(self.plane.apiserver_port)
            self._relay.start([node.netns for node in self.nodes.values()])
            for node in self.nodes.values():
                self._write_node_files(node)
            daemons = SimulatedNodes(
                self.plane,
                self.directory / "daemons",
                list(self.node_names),
                self.pool_namespace,
                identity=self.identity,
            )
            self._daemons = daemons.__enter__()  # stops what it started if it fails
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the daemons and the relay, delete every netns; report what could not go."""
        problems: list[str] = []
        if self._daemons is not None:
            try:
                self._daemons.stop()
            except Exception as error:
                problems.append(f"stopping the node daemons: {error}")
            self._daemons = None
        if self._relay is not None:
            try:
                self._relay.stop()
            except Exception as error:
                problems.append(f"stopping the apiserver relay: {error}")
            self._relay = None
        for netns in reversed(self._netns):
            problems += end_processes_in(netns)
            done = subprocess.run(
                ["ip", "netns", "del", netns], capture_output=True, text=True, check=False
            )
            if done.returncode != 0 and Path(f"/var/run/netns/{netns}").exists():
                problems.append(f"ip netns del {netns}: {done.stderr.strip()}")
        self._netns.clear()
        self.pods.clear()
        if problems:
            raise LabError("the lab was not completely removed: " + "; ".join(problems))

    # --- building --------------------------------------------------------------------------
    @property
    def bin_dir(self) -> Path:
        """The nodes' CNI bin dir: our shim as ``whereabouts`` plus the reference plugins."""
        return self.directory / "cni-bin"

    def _install_plugins(self) -> None:
        missing = [name for name in REFERENCE_PLUGINS if not (CNI_BIN_DIR / name).is_file()]
        if missing:
            raise LabError(
                f"reference CNI plugins missing in {CNI_BIN_DIR}: {', '.join(missing)} "
                "(install the Debian package containernetworking-plugins: make setup)"
            )
        install_cni(self.bin_dir, name="whereabouts")
        for name in REFERENCE_PLUGINS:
            link = self.bin_dir / name
            if not link.exists():
                link.symlink_to(CNI_BIN_DIR / name)

    def _add_netns(self, role: str) -> str:
        name = f"wbl-{self.tag}-{role}"
        ip("netns", "add", name)
        self._netns.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    def _build_topology(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # The mountpoint for the nodes' own /var/lib/cni must exist on the host;
        # it is the directory a CNI installation has anyway and stays empty here.
        NODE_DISK_MOUNTPOINT.mkdir(parents=True, exist_ok=True)
        self.segment_netns = self._add_netns("segment")
        make_switch(self.segment_netns, SEGMENT_BRIDGE)
        self.router_netns = self._add_netns("router")
        cable(self.segment_netns, self.router_netns, ROUTER_NIC, "router")
        for index, name in enumerate(self.node_names):
            netns = self._add_netns(name)
            node = LabNode(name, index, netns, self.directory / name)
            self.nodes[name] = node
            for nic in NODE_NICS:
                cable(self.segment_netns, netns, nic, f"n{index}")
            make_switch(netns, NODE_BRIDGE)
            ip("-n", netns, "link", "set", BRIDGE_PORT, "master", NODE_BRIDGE)

    def add_router_address(self, cidr: str) -> None:
        """Give the router an address on the segment (a network's gateway), usable at once."""
        add_address(self.router_netns, ROUTER_NIC, cidr)

    def _write_node_files(self, node: LabNode) -> None:
        node.directory.mkdir(parents=True, exist_ok=True)
        node.disk.mkdir(exist_ok=True)
        node.multus.parent.mkdir(exist_ok=True)
        (node.directory / "net.d").mkdir(exist_ok=True)
        assert self._multus_binary is not None
        # The runtime's view of a node: its own /var/lib/cni, for this call only
        # (a private mount namespace, gone when the plugin exits).
        script = (
            "#!/bin/sh\n"
            f"# Multus as simulated node {node.name} runs it, with its own /var/lib/cni.\n"
            "exec unshare --mount --propagation private -- /bin/sh -c "
            + shlex.quote(f'mount --bind "$0" {NODE_DISK_MOUNTPOINT} && exec "$@"')
            + f" {shlex.quote(str(node.disk))} {shlex.quote(str(self._multus_binary))} "
            + '"$@"\n'
        )
        node.multus.write_text(script)
        node.multus.chmod(0o755)
        (node.directory / "net.d" / "00-multus.conf").write_text(
            json.dumps(self.multus_config(node.name), indent=2) + "\n"
        )

    def multus_config(self, node_name: str) -> dict[str, Any]:
        """The node's Multus configuration (what /etc/cni/net.d/00-multus.conf would hold)."""
        node = self.nodes[node_name]
        return {
            "cniVersion": "1.0.0",
            "name": "multus-cni-network",
            "type": "multus",
            "kubeconfig": str(self.plane.kubeconfig_for(self.identity)),
            "binDir": str(self.bin_dir),
            # The node's /var/lib/cni/multus (Multus' default), seen from the host.
            "cniDir": str(node.disk / "multus"),
            "confDir": str(node.directory / "net.d"),
            "logFile": str(node.directory / "multus.log"),
            "logLevel": "verbose",
            "logToStderr": False,
            "delegates": [
                {
                    "cniVersion": "1.0.0",
                    "name": "lab-default",
                    "type": "ptp",
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": node.default_subnet}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                }
            ],
        }

    def node_environment(self, node_name: str) -> dict[str, str]:
        """What the node's runtime passes to Multus: where this node's daemon listens."""
        if self._daemons is None:
            raise LabError("the lab is not running")
        return self._daemons[node_name].environment()

    def daemon_log(self, node_name: str) -> str:
        if self._daemons is None:
            return ""
        return self._daemons[node_name].log.read_text(errors="replace")

    # --- pods ------------------------------------------------------------------------------
    def create_pod(
        self,
        namespace: str,
        name: str,
        node: str,
        networks: Sequence[Mapping[str, Any]] | str = (),
    ) -> LabPod:
        """A Pod object bound to ``node`` with the networks annotation, and its netns."""
        if node not in self.nodes:
            raise LabError(f"no node {node!r} in this lab (nodes: {', '.join(self.nodes)})")
        body = pod_object(namespace, name, node, networks)
        created = json.loads(
            self.plane.kubectl(
                "create", "-f", "-", "-o", "json", input_text=json.dumps(body)
            ).stdout
        )
        netns = self._add_netns(f"pod{len(self.pods)}")
        pod = LabPod(
            namespace=namespace,
            name=name,
            uid=str(created["metadata"]["uid"]),
            node=node,
            netns=netns,
            sandbox=uuid.uuid4().hex + uuid.uuid4().hex,
        )
        self.pods[pod.ref] = pod
        return pod

    def multus(self, command: str, pod: LabPod, timeout_s: float = 60.0) -> Outcome:
        """Run the pod's node's Multus for ``command``, as the kubelet's runtime would."""
        node = self.nodes[pod.node]
        return invoke(
            node.multus,
            command,
            self.multus_config(pod.node),
            container_id=pod.sandbox,
            ifname=POD_DEFAULT_IFNAME,
            netns=pod.netns_path,
            args=pod_args(pod.namespace, pod.name, uid=pod.uid, infra=pod.sandbox),
            cni_path=self.bin_dir,
            env=self.node_environment(pod.node),
            in_netns=node.netns,
            timeout_s=timeout_s,
        )

    def add(self, pod: LabPod) -> Outcome:
        return self.multus("ADD", pod)

    def delete(self, pod: LabPod) -> Outcome:
        return self.multus("DEL", pod)

    def delete_pod_object(self, pod: LabPod) -> None:
        """Delete the Pod object only (no CNI DEL), as when a node dies with its pods."""
        self.plane.kubectl(
            "delete", "pod", "-n", pod.namespace, pod.name, "--grace-period=0", "--force"
        )

    # --- looking at pods -------------------------------------------------------------------
    def network_status(self, pod: LabPod) -> list[dict[str, Any]]:
        """The pod's ``k8s.v1.cni.cncf.io/network-status`` as Multus wrote it ([] if none)."""
        got = self.plane.kubectl("get", "pod", "-n", pod.namespace, pod.name, "-o", "json")
        return network_status(json.loads(got.stdout))

    @staticmethod
    def addresses(netns: str, ifname: str) -> list[str]:
        """Global addresses (``ip/prefix``) on ``ifname`` inside ``netns``; [] without it."""
        return addresses(netns, ifname)

    def pod_addresses(self, pod: LabPod, ifname: str = "net1") -> list[str]:
        return self.addresses(pod.netns, ifname)

    def wait_addresses_usable(
        self, pod: LabPod, ifname: str = "net1", timeout_s: float = 10.0
    ) -> None:
        """Wait until IPv6 duplicate address detection has passed on the pod's interface."""
        wait_addresses_usable(pod, ifname, timeout_s)

    def ping_from(
        self, pod: LabPod, target: str, timeout_s: float = 3.0, source: str | None = None
    ) -> bool:
        return ping(pod.netns, target, timeout_s, source)
