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
  reach. A relay (threads of this process) listens on ``127.0.0.1:<apiserver
  port>`` inside each node netns and forwards to the real one, so the admin
  kubeconfig works unchanged there, TLS end to end.

``Lab`` is a context manager: leaving it stops the daemons and the relay and
deletes every namespace it made (which destroys every link in them), also
when the block failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gzip
import json
import os
import secrets
import shlex
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from whereabouts_py.cni.install import install_cni
from whereabouts_py.devcluster.controlplane import ControlPlane
from whereabouts_py.devcluster.multus import ensure_multus
from whereabouts_py.devcluster.nodes import SimulatedNodes
from whereabouts_py.devcluster.runtime import CNI_BIN_DIR, Outcome, invoke, pod_args

NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"
NETWORK_STATUS_ANNOTATION = "k8s.v1.cni.cncf.io/network-status"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"

SEGMENT_BRIDGE = "segment"
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

_CLONE_NEWNET = 0x40000000


class LabError(RuntimeError):
    """The lab could not be built, used or completely removed; the message says what."""


def examples_dir() -> Path:
    """The repository's ``manifests/examples`` (the NetworkAttachmentDefinitions)."""
    return Path(__file__).resolve().parents[2] / "manifests" / "examples"


# --- small helpers --------------------------------------------------------------------------


def ip(*argv: str) -> str:
    """Run ``ip argv...``; raise ``LabError`` with its stderr on failure."""
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        said = f"{done.stdout.strip()} {done.stderr.strip()}".strip()
        raise LabError(f"ip {' '.join(argv)} failed ({done.returncode}): {said}")
    return done.stdout


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns: {os.strerror(error)}")


@contextlib.contextmanager
def inside_netns(netns: str) -> Iterator[None]:
    """Move the calling thread into ``netns`` for the block.

    Sockets made inside stay in that netns after the thread moves back. Only
    this thread moves (setns acts per thread), so other threads are unaffected.
    """
    with (
        open("/proc/thread-self/ns/net", "rb") as home,
        open(f"/var/run/netns/{netns}", "rb") as target,
    ):
        _setns(target.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ping(netns: str, target: str, timeout_s: float = 3.0, source: str | None = None) -> bool:
    """Whether ``target`` answers an ICMP echo sent from inside ``netns`` (IPv4 or IPv6).

    A raw socket made inside the netns; one echo every half second until a
    reply or the timeout (the first may wait for neighbour resolution).
    ``source`` binds the echo to one of the netns' addresses, which is what
    source-based routing (sbr) selects on.
    """
    v6 = ":" in target
    family = socket.AF_INET6 if v6 else socket.AF_INET
    protocol = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    request, reply = (128, 129) if v6 else (8, 0)
    ident = secrets.randbelow(0xFFFF)
    with inside_netns(netns):
        raw = socket.socket(family, socket.SOCK_RAW, protocol)
    with raw:
        if source is not None:
            raw.bind((source, 0))
        deadline = time.monotonic() + timeout_s
        sequence = 0
        while time.monotonic() < deadline:
            sequence += 1
            body = struct.pack("!HH", ident, sequence) + b"whereabouts-py lab"
            header = struct.pack("!BBH", request, 0, 0)
            if not v6:  # the kernel fills in the ICMPv6 checksum itself
                header = struct.pack("!BBH", request, 0, _checksum(header + body))
            raw.sendto(header + body, (target, 0))
            resend_at = min(deadline, time.monotonic() + 0.5)
            while (left := resend_at - time.monotonic()) > 0:
                raw.settimeout(left)
                try:
                    packet, source = raw.recvfrom(4096)
                except TimeoutError:
                    break
                icmp = packet if v6 else packet[(packet[0] & 0x0F) * 4 :]
                if (
                    len(icmp) >= 8
                    and icmp[0] == reply
                    and struct.unpack("!H", icmp[4:6])[0] == ident
                    and source[0].split("%")[0] == target
                ):
                    return True
    return False


def kernel_lacks(kind: str) -> str | None:
    """Why this kernel cannot make a link of ``kind`` (e.g. ``ipvlan``), or None if it can.

    Probed in a throwaway netns: a veth pair and the kind on top of it. The
    reason quotes ``ip`` and, where the kernel publishes its configuration,
    the ``CONFIG_<KIND>`` line.
    """
    probe = f"wbl-probe-{uuid.uuid4().hex[:8]}"
    ip("netns", "add", probe)
    try:
        ip("-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1")
        made = subprocess.run(
            ["ip", "-n", probe, "link", "add", "k0", "link", "p0", "type", kind],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        ip("netns", "del", probe)
    if made.returncode == 0:
        return None
    release = os.uname().release
    return (
        f"kernel {release} cannot create {kind} links: 'ip link add ... type {kind}' said "
        f"{made.stderr.strip()!r}; {_kernel_option(f'CONFIG_{kind.upper()}')}"
    )


def _kernel_option(option: str) -> str:
    """How the running kernel was configured for ``option``, as its config file says."""
    release = os.uname().release
    for path in (Path("/proc/config.gz"), Path(f"/boot/config-{release}")):
        try:
            raw = path.read_bytes()
        except OSError:
            continue
        text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode(errors="replace")
        for line in text.splitlines():
            if line.startswith((f"{option}=", f"# {option} ")):
                return f"{path}: {line.strip()}"
        return f"{path} does not mention {option}"
    return f"no kernel config published (/proc/config.gz, /boot/config-{release}) to check {option}"


def remove_stale_labs() -> list[str]:
    """Delete the netns of labs whose process is gone (killed before it could clean up)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    removed = []
    for line in listed.stdout.splitlines():
        name = line.split(" ", 1)[0]
        owner = name.split("-")[1] if name.startswith("wbl-") else ""
        if not owner.isdigit() or Path(f"/proc/{owner}").exists():
            continue
        done = subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        if done.returncode == 0:
            removed.append(name)
    return removed


def _end_processes_in(netns: str) -> list[str]:
    """Kill what still runs in one of the lab's netns (a hung Multus or plugin); report it."""
    pids = ["ip", "netns", "pids", netns]
    listed = subprocess.run(pids, capture_output=True, text=True, check=False)
    problems = []
    for pid in listed.stdout.split():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            continue
        problems.append(f"process {pid} ({command.strip()}) was still running in {netns}")
    return problems


# --- the apiserver relay --------------------------------------------------------------------


class _ApiRelay:
    """Serves ``127.0.0.1:<port>`` inside each node netns, forwarding to the host's loopback."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="lab-apiserver-relay", daemon=True
        )
        self._servers: list[asyncio.Server] = []
        self._streams: set[asyncio.StreamWriter] = set()

    def start(self, netns_names: Sequence[str]) -> None:
        self._thread.start()
        for netns in netns_names:
            with inside_netns(netns):
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(("127.0.0.1", self.port))
                listener.listen(64)
                listener.setblocking(False)
                started = asyncio.run_coroutine_threadsafe(
                    asyncio.start_server(self._serve, sock=listener), self._loop
                )
                self._servers.append(started.result(timeout=10))
            except BaseException:
                listener.close()
                raise

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._streams.add(writer)
        try:
            # This coroutine runs on the relay thread, which never leaves the
            # host's netns: the upstream connection reaches the real apiserver.
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            self._streams.discard(writer)
            writer.close()
            return
        self._streams.add(up_writer)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for stream in (writer, up_writer):
                self._streams.discard(stream)
                stream.close()

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                sink.write_eof()

    def stop(self) -> None:
        """Close every socket (a socket in a netns keeps that netns alive) and the thread."""
        if not self._thread.is_alive():
            self._loop.close()
            return

        async def shutdown() -> None:
            for server in self._servers:
                server.close()
            for stream in list(self._streams):
                stream.close()
            current = asyncio.current_task()
            tasks = [task for task in asyncio.all_tasks() if task is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


# --- the lab ---------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class LabPod:
    """A Pod object in the API and the network namespace standing for its sandbox."""

    namespace: str
    name: str
    uid: str
    node: str
    netns: str
    sandbox: str

    @property
    def netns_path(self) -> str:
        return f"/var/run/netns/{self.netns}"

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


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
    _relay: _ApiRelay | None = field(default=None, init=False, repr=False)
    _multus_binary: Path | None = field(default=None, init=False, repr=False)

    # --- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> Lab:
        try:
            remove_stale_labs()
            self._multus_binary = ensure_multus()
            self._install_plugins()
            self._build_topology()
            self._relay = _ApiRelay(self.plane.apiserver_port)
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
            problems += _end_processes_in(netns)
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
        self.segment_netns = segment = self._add_netns("segment")
        # Flood multicast (no snooping): IPv6 neighbour discovery must reach every port.
        ip("-n", segment, "link", "add", SEGMENT_BRIDGE, "type", "bridge", "mcast_snooping", "0")
        ip("-n", segment, "link", "set", SEGMENT_BRIDGE, "up")
        self.router_netns = self._add_netns("router")
        self._cable(self.router_netns, ROUTER_NIC, "router")
        for index, name in enumerate(self.node_names):
            netns = self._add_netns(name)
            node = LabNode(name, index, netns, self.directory / name)
            self.nodes[name] = node
            for nic in NODE_NICS:
                self._cable(netns, nic, f"n{index}")
            ip("-n", netns, "link", "add", NODE_BRIDGE, "type", "bridge", "mcast_snooping", "0")
            ip("-n", netns, "link", "set", BRIDGE_PORT, "master", NODE_BRIDGE)
            ip("-n", netns, "link", "set", NODE_BRIDGE, "up")

    def _cable(self, netns: str, nic: str, prefix: str) -> None:
        """A veth from the segment's switch to ``nic`` in ``netns``, both ends up."""
        port, segment = f"{prefix}-{nic}", self.segment_netns
        peer = ("peer", "name", nic, "netns", netns)
        ip("-n", segment, "link", "add", port, "type", "veth", *peer)
        ip("-n", segment, "link", "set", port, "master", SEGMENT_BRIDGE, "up")
        ip("-n", netns, "link", "set", nic, "up")

    def add_router_address(self, cidr: str) -> None:
        """Give the router an address on the segment (a network's gateway), usable at once."""
        extra = ["nodad"] if ":" in cidr else []
        ip("-n", self.router_netns, "addr", "add", cidr, "dev", ROUTER_NIC, *extra)

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
        annotation = networks if isinstance(networks, str) else json.dumps(list(networks))
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "annotations": {NETWORKS_ANNOTATION: annotation} if annotation else {},
            },
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": PAUSE_IMAGE}]},
        }
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
        got = json.loads(
            self.plane.kubectl("get", "pod", "-n", pod.namespace, pod.name, "-o", "json").stdout
        )
        text = got["metadata"].get("annotations", {}).get(NETWORK_STATUS_ANNOTATION)
        status: list[dict[str, Any]] = json.loads(text) if text else []
        return status

    @staticmethod
    def addresses(netns: str, ifname: str) -> list[str]:
        """Global addresses (``ip/prefix``) on ``ifname`` inside ``netns``; [] without it."""
        done = subprocess.run(
            ["ip", "-j", "-n", netns, "addr", "show", "dev", ifname],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not done.stdout.strip():
            return []
        return [
            f"{info['local']}/{info['prefixlen']}"
            for link in json.loads(done.stdout)
            for info in link.get("addr_info", [])
            if info.get("scope") == "global"
        ]

    def pod_addresses(self, pod: LabPod, ifname: str = "net1") -> list[str]:
        return self.addresses(pod.netns, ifname)

    def wait_addresses_usable(
        self, pod: LabPod, ifname: str = "net1", timeout_s: float = 10.0
    ) -> None:
        """Wait until IPv6 duplicate address detection has passed on the pod's interface.

        The plugins return before DAD ends (about a second); a tentative address
        cannot send yet. A failed DAD means another host holds the address.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            shown = ip("-j", "-n", pod.netns, "addr", "show", "dev", ifname).strip()
            infos = [
                info for link in json.loads(shown or "[]") for info in link.get("addr_info", [])
            ]
            failed = [info["local"] for info in infos if info.get("dadfailed")]
            if failed:
                raise LabError(
                    f"duplicate address detection failed for {', '.join(failed)} on {ifname} "
                    f"of pod {pod.ref}: another host on the segment holds it"
                )
            if not any(info.get("tentative") for info in infos):
                return
            if time.monotonic() > deadline:
                raise LabError(f"addresses on {ifname} of pod {pod.ref} still tentative: {infos}")
            time.sleep(0.05)

    def ping_from(
        self, pod: LabPod, target: str, timeout_s: float = 3.0, source: str | None = None
    ) -> bool:
        return ping(pod.netns, target, timeout_s, source)
