"""Bring a cluster up and take it down: a list of small steps, each with its status line.

``Cluster.up`` runs, in order: builds (once, cached), the control plane, the
RBAC the nodes need, the network, the apiserver relay, every node
(directories, cgroup root, CNI, mount namespace, containerd, images,
kubelet), the controller-manager and the scheduler, then waits until every
node is Ready. What it starts and makes is written to ``cluster.json`` in
the cluster's directory as it goes, so ``Cluster.down`` (also after a
failed ``up``, or from another process) finds and removes all of it:
processes, the nodes' mount namespaces (with every mount in them), pod
network namespaces, cgroups, network namespaces and links, and finally the
control plane and the directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whereabouts_py_dev.binaries import ensure_binaries
from whereabouts_py_dev.cluster import (
    cgroups,
    cni,
    containerd,
    controllers,
    egress,
    kubelet,
    network,
)
from whereabouts_py_dev.cluster.builds import NodeBinaries, ensure_node_binaries
from whereabouts_py_dev.cluster.images import import_image, node_images
from whereabouts_py_dev.cluster.node import (
    Node,
    kill_mount_namespace,
    mount_namespace,
    processes_in_mount_namespace,
    spawn,
    wait_for,
)
from whereabouts_py_dev.controlplane import ControlPlane, ControlPlaneError, free_port
from whereabouts_py_dev.multus import ensure_multus
from whereabouts_py_dev.netns import LabError, inside_netns

STATE_FILE = "cluster.json"
EGRESS_SOCKET = "egress.sock"
CONTAINERD_CONFIG = "containerd.toml"
KUBELET_CONFIG = "kubelet.json"
MAX_SOCKET_PATH = 107  # sun_path, less its terminating zero
# Every running cluster's tag -> directory, so that a later ``up`` finds what a killed one left.
REGISTRY = Path("/run/whereabouts-py-dev/clusters")
READY_TIMEOUT_S = 180.0
MAX_NODES = 26  # node-a ... node-z

# What the nodes' identities may do: the kubelet's role (as kubeadm's clusters grant it
# without the Node authorizer) and what Multus reads and writes with the node's identity.
NODE_RBAC = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "devcluster:nodes"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:node",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "devcluster:multus"},
        "rules": [
            {
                "apiGroups": ["k8s.cni.cncf.io"],
                "resources": ["network-attachment-definitions"],
                "verbs": ["get", "list", "watch"],
            },
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {
                "apiGroups": [""],
                "resources": ["pods/status"],
                "verbs": ["get", "update", "patch"],
            },
            {
                "apiGroups": ["", "events.k8s.io"],
                "resources": ["events"],
                "verbs": ["create", "patch", "update"],
            },
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "devcluster:multus"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "devcluster:multus",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}
        ],
    },
]


def node_names(count: int) -> list[str]:
    if not 1 <= count <= MAX_NODES:
        raise LabError(f"--nodes must be between 1 and {MAX_NODES}, not {count}")
    return [f"node-{chr(ord('a') + index)}" for index in range(count)]


def _tag(directory: Path) -> str:
    """A short name part unique to the cluster's directory (netns, cgroup roots)."""
    return hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:6]


def _status(line: str) -> None:
    print(f"devcluster: {line}", file=sys.stderr, flush=True)


@dataclass
class Cluster:
    """A running (or partly started) cluster and everything ``down`` must remove."""

    plane: ControlPlane
    directory: Path
    topology: network.Topology
    nodes: list[Node]
    # "relay", "kube-controller-manager", "kube-scheduler", "<node>/holder",
    # "<node>/containerd", "<node>/kubelet".
    pids: dict[str, int] = field(default_factory=dict)
    mount_namespaces: dict[str, str] = field(default_factory=dict)
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise LabError(
            f"no node {name!r} in this cluster ({', '.join(n.name for n in self.nodes)})"
        )

    def add_router_address(self, cidr: str) -> None:
        """Give the router an address on the segment (a secondary network's gateway)."""
        network.add_router_address(self.topology, cidr)

    def kubectl(self, *args: str, check: bool = True, input_text: str | None = None) -> Any:
        return self.plane.kubectl(*args, check=check, input_text=input_text)

    # --- up -------------------------------------------------------------------------------
    @classmethod
    def up(
        cls,
        directory: Path,
        node_count: int,
        *,
        tied: bool = False,
        images: Sequence[Path] = (),
        status: Callable[[str], None] = _status,
    ) -> Cluster:
        """Build what is missing, start everything, return when every node is Ready.

        ``images`` are more OCI archives (``images.import_image``) imported into
        every node with ours before the kubelets start. ``tied``: the cluster's
        processes die with the caller (tests); otherwise it outlives it.
        """
        started = time.monotonic()
        names = node_names(node_count)
        directory = directory.resolve()
        if (directory / STATE_FILE).exists():
            raise LabError(
                f"a cluster already runs in {directory}; stop it with "
                f"'whereabouts-py-dev devcluster down --dir {directory}'"
            )
        for removed in remove_stale_clusters():
            status(f"removed what a killed cluster left: {removed}")
        status("[1/7] builds (once, then cached): control plane, node binaries, Multus, images")
        ensure_binaries()
        binaries = ensure_node_binaries()
        multus = ensure_multus()
        archives = [*node_images(), *images]
        status("[2/7] control plane (etcd, kube-apiserver)")
        identities = [controllers.CONTROLLER_MANAGER, controllers.SCHEDULER]
        identities += [controllers.node_identity(name) for name in names]
        if len(str(directory / EGRESS_SOCKET).encode()) > MAX_SOCKET_PATH:
            raise LabError(
                f"the cluster directory {directory} is too long for the unix socket "
                f"{EGRESS_SOCKET} in it (at most {MAX_SOCKET_PATH} bytes): use a shorter --dir"
            )
        directory.mkdir(parents=True, exist_ok=True)
        egress_config = directory / "egress-selector.yaml"
        egress_config.write_text(egress.egress_selector_config(directory / EGRESS_SOCKET))
        plane = ControlPlane.start(
            directory,
            identities=identities,
            die_with_parent=tied,
            log_line=False,
            apiserver_args=[f"--egress-selector-config-file={egress_config}"],
            service_account_admission=True,
        )
        tag = _tag(directory)
        topology = network.Topology(tag, tuple(names))
        nodes = [
            Node(
                name=name,
                index=index,
                netns=topology.node(name),
                directory=directory / "nodes" / name,
                ip=network.node_ip(index),
                pod_cidr=network.pod_cidr(index),
                cgroup_root=f"/wbc-{tag}-{name}",
            )
            for index, name in enumerate(names)
        ]
        cluster = cls(plane, directory, topology, nodes)
        cluster._save()
        _register(tag, directory)
        try:
            cluster._start(binaries, multus, archives, tied, status)
        except BaseException:
            with contextlib.suppress(Exception):
                cluster.down(remove_directory=False)
            raise
        status(
            f"ready: {node_count} node(s) Ready in {time.monotonic() - started:.0f}s "
            f"(kubeconfig {plane.kubeconfig})"
        )
        return cluster

    def _start(
        self,
        binaries: NodeBinaries,
        multus: Path,
        images: list[Path],
        tied: bool,
        status: Callable[[str], None],
    ) -> None:
        status("[3/7] RBAC for the nodes' identities")
        self.kubectl(
            "apply",
            "-f",
            "-",
            input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": NODE_RBAC}),
        )
        status("[4/7] network: segment, router, node namespaces")
        network.build(self.topology)
        status("[5/7] relays: apiserver into the node namespaces, kubelets to the apiserver")
        self._start_relay(tied)
        for node in self.nodes:
            status(f"[6/7] node {node.name}: containerd ({node.ip}, pods {node.pod_cidr})")
            self._start_node(node, multus, tied)
        status(f"[6/7] images into every node: {', '.join(path.name for path in images)}")
        for archive in images:
            import_image(archive, self.nodes)
        for node in self.nodes:
            self.start_kubelet(node.name, tied=tied, binaries=binaries)
        status("[7/7] kube-controller-manager, kube-scheduler; waiting for the nodes to be Ready")
        self._spawn(
            "kube-controller-manager",
            controllers.controller_manager_command(
                binaries.kube_controller_manager, self.plane, free_port()
            ),
            self.directory / "logs" / "kube-controller-manager.log",
            tied,
        )
        self._spawn(
            "kube-scheduler",
            controllers.scheduler_command(binaries.kube_scheduler, self.plane, free_port()),
            self.directory / "logs" / "kube-scheduler.log",
            tied,
        )
        self.wait_ready()

    def _spawn(
        self, key: str, command: list[str], log: Path, tied: bool
    ) -> subprocess.Popen[bytes]:
        process = spawn(command, log, tied)
        self._processes[key] = process
        self.pids[key] = process.pid
        self._save()
        return process

    def _start_relay(self, tied: bool) -> None:
        command = [
            sys.executable,
            "-m",
            "whereabouts_py_dev.cluster.relay",
            "--port",
            str(self.plane.apiserver_port),
        ]
        command += ["--egress-socket", str(self.directory / EGRESS_SOCKET)]
        command += ["--egress-netns", self.topology.router]
        command += ["--also", f"{network.KUBERNETES_SERVICE_IP}:{network.KUBERNETES_SERVICE_PORT}"]
        for node in self.nodes:
            command += ["--netns", node.netns, "--host", f"{node.name}={node.ip}"]
        log = self.directory / "logs" / "relay.log"
        process = self._spawn("relay", command, log, tied)
        wait_for(
            lambda: all(
                self._relay_listens(node.netns, address)
                for node in self.nodes
                for address in (
                    ("127.0.0.1", self.plane.apiserver_port),
                    (network.KUBERNETES_SERVICE_IP, network.KUBERNETES_SERVICE_PORT),
                )
            ),
            "the apiserver relay",
            lambda: log.read_text(errors="replace"),
            process=process,
        )

    @staticmethod
    def _relay_listens(netns: str, address: tuple[str, int]) -> bool:
        with inside_netns(netns):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with probe:
            probe.settimeout(1)
            return probe.connect_ex(address) == 0

    def _start_node(self, node: Node, multus: Path, tied: bool) -> None:
        """Everything of a node up to its running containerd."""
        node.make_directories()
        shutil.copy2(
            self.plane.kubeconfig_for(controllers.node_identity(node.name).name), node.kubeconfig
        )
        cgroups.create(node.cgroup_root)
        cni.install(node, multus)
        (node.directory / CONTAINERD_CONFIG).write_text(containerd.config())
        kubelet.write_config(node.directory / KUBELET_CONFIG, node.cgroup_root)
        holder = node.start_holder(tied)
        self.pids[f"{node.name}/holder"] = holder
        self.mount_namespaces[node.name] = mount_namespace(holder)
        self._save()
        self.start_containerd(node.name, tied=tied)

    # --- a node's processes, for tests that stop and start them ------------------------------
    def start_containerd(self, node_name: str, *, tied: bool = True) -> None:
        """Start the node's containerd (again); return once it answers."""
        node = self.node(node_name)
        containerd_binary = shutil.which("containerd")
        if containerd_binary is None:
            raise LabError(
                "containerd is not installed (the Debian package containerd: make setup)"
            )
        process = node.spawn_inside(
            self.pids[f"{node.name}/holder"],
            containerd.command(Path(containerd_binary), node.directory / CONTAINERD_CONFIG),
            "containerd.log",
            tied,
        )
        self._processes[f"{node.name}/containerd"] = process
        self.pids[f"{node.name}/containerd"] = process.pid
        self._save()
        wait_for(
            lambda: _ctr_answers(node.containerd_socket),
            f"node {node.name}'s containerd",
            lambda: _tail(node.logs / "containerd.log"),
            process=process,
        )

    def stop_containerd(self, node_name: str) -> None:
        """Stop the node's containerd (SIGTERM); its shims and containers keep running."""
        self._stop_process(f"{node_name}/containerd")
        self._save()

    def start_kubelet(
        self, node_name: str, *, tied: bool = True, binaries: NodeBinaries | None = None
    ) -> None:
        """Start the node's kubelet (again); it registers or resumes its Node."""
        node = self.node(node_name)
        binary = (binaries or ensure_node_binaries()).kubelet
        process = node.spawn_inside(
            self.pids[f"{node.name}/holder"],
            kubelet.command(
                binary, node.directory / KUBELET_CONFIG, node.kubeconfig, node.name, node.ip
            ),
            "kubelet.log",
            tied,
        )
        self._processes[f"{node.name}/kubelet"] = process
        self.pids[f"{node.name}/kubelet"] = process.pid
        self._save()

    def stop_kubelet(self, node_name: str) -> None:
        """Stop the node's kubelet (SIGTERM); its pods keep running without it."""
        self._stop_process(f"{node_name}/kubelet")
        self._save()

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Return when every node is Ready; LabError with the kubelets' last words if not."""
        deadline = time.monotonic() + timeout_s
        not_ready = [node.name for node in self.nodes]
        while time.monotonic() < deadline:
            for key, process in self._processes.items():
                if process.poll() is not None:
                    log = self.directory / "logs" / f"{key}.log"
                    if "/" in key:
                        name, what = key.split("/")
                        log = self.node(name).logs / f"{what}.log"
                    raise LabError(f"{key} exited with status {process.returncode}:\n{_tail(log)}")
            not_ready = [name for name, ready in self.node_readiness().items() if not ready]
            missing = {node.name for node in self.nodes} - set(self.node_readiness())
            if not not_ready and not missing:
                return
            time.sleep(1)
        tails = "\n".join(
            f"--- {name} kubelet:\n{_tail(self.node(name).logs / 'kubelet.log')}"
            for name in not_ready
        )
        raise LabError(f"nodes not Ready after {timeout_s:.0f}s: {', '.join(not_ready)}\n{tails}")

    def node_readiness(self) -> dict[str, bool]:
        """Each registered node's Ready condition."""
        listed = json.loads(self.kubectl("get", "nodes", "-o", "json").stdout)
        readiness = {}
        for item in listed["items"]:
            conditions = item.get("status", {}).get("conditions", [])
            readiness[item["metadata"]["name"]] = any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
            )
        return readiness

    # --- state ----------------------------------------------------------------------------
    def _save(self) -> None:
        state = {
            "tag": self.topology.tag,
            "node_names": list(self.topology.node_names),
            "nodes": [node.to_json() for node in self.nodes],
            "pids": self.pids,
            "mount_namespaces": self.mount_namespaces,
        }
        (self.directory / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Cluster:
        directory = directory.resolve()
        try:
            state = json.loads((directory / STATE_FILE).read_text())
        except FileNotFoundError:
            raise LabError(f"no cluster state in {directory}") from None
        return cls(
            plane=ControlPlane.load(directory),
            directory=directory,
            topology=network.Topology(state["tag"], tuple(state["node_names"])),
            nodes=[Node.from_json(item) for item in state["nodes"]],
            pids={key: int(pid) for key, pid in state["pids"].items()},
            mount_namespaces=dict(state["mount_namespaces"]),
        )

    # --- down -----------------------------------------------------------------------------
    def down(self, *, remove_directory: bool = True) -> None:
        """Remove everything ``up`` made; LabError listing whatever could not be removed."""
        problems: list[str] = []
        # Every step runs, whatever an earlier one met: what is left is listed at the end.
        for node in self.nodes:
            try:
                problems += self._stop_node(node)
            except Exception as error:
                problems.append(f"stopping node {node.name}: {error!r}")
        for key in ("kube-scheduler", "kube-controller-manager", "relay"):
            self._stop_process(key)
        problems += network.remove(self.topology)
        try:
            self.plane.stop(remove_directory=False)
        except (ControlPlaneError, OSError) as error:
            problems.append(f"stopping the control plane: {error}")
        problems += _unmount_under(self.directory)
        if not problems:
            # Kept otherwise, so that a later ``up`` tries again (remove_stale_clusters).
            _unregister(self.topology.tag)
        if problems:
            # The state stays: 'down' again, or a later 'up', retries what is left.
            self._save_if_present()
            raise LabError("the cluster was not completely removed: " + "; ".join(problems))
        if remove_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
        else:
            (self.directory / STATE_FILE).unlink(missing_ok=True)

    def _stop_process(self, key: str, grace_s: float = 5.0) -> None:
        pid = self.pids.pop(key, None)
        if pid is None:
            return
        process = self._processes.pop(key, None)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _running(pid, process):
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)

    def _stop_node(self, node: Node) -> list[str]:
        problems: list[str] = []
        self._stop_process(f"{node.name}/kubelet")
        # Containers first (they are in the node's cgroup root), then the runtime.
        cgroups.kill_all(node.cgroup_root)
        holder = self.pids.get(f"{node.name}/holder")
        pod_netns = node.pod_netns_mounts(holder) if holder else []
        mnt_ns = self.mount_namespaces.get(node.name)
        if mnt_ns:
            problems += kill_mount_namespace(mnt_ns)
        for key in ("containerd", "holder"):
            process = self._processes.pop(f"{node.name}/{key}", None)
            if process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
            self.pids.pop(f"{node.name}/{key}", None)
        for name in pod_netns:
            if Path(f"/run/netns/{name}").exists():
                done = subprocess.run(
                    ["ip", "netns", "del", name], capture_output=True, text=True, check=False
                )
                if done.returncode != 0:
                    problems.append(f"ip netns del {name}: {done.stderr.strip()}")
        problems += cgroups.remove(node.cgroup_root)
        self._save_if_present()
        return problems

    def _save_if_present(self) -> None:
        if (self.directory / STATE_FILE).exists():
            self._save()


def _running(pid: int, process: subprocess.Popen[bytes] | None) -> bool:
    if process is not None:
        return process.poll() is None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _ctr_answers(address: Path) -> bool:
    if not address.exists():
        return False
    done = subprocess.run(
        ["ctr", "--address", address.name, "version"],
        cwd=address.parent,  # a socket's path is limited to 107 bytes
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def host_mounts_under(directory: Path) -> list[str]:
    """Mount points in the host's mount namespace at or below ``directory``."""
    prefix = str(directory.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mountpoint = line.split()[4]
        if mountpoint == prefix or mountpoint.startswith(prefix + "/"):
            found.append(mountpoint)
    return found


def _unmount_under(directory: Path) -> list[str]:
    problems = []
    for mountpoint in sorted(host_mounts_under(directory), key=len, reverse=True):
        done = subprocess.run(
            ["umount", "-l", mountpoint], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            problems.append(f"umount {mountpoint}: {done.stderr.strip()}")
    return problems


@contextlib.contextmanager
def running(directory: Path, node_count: int) -> Iterator[Cluster]:
    """A cluster for the duration of a ``with`` block (its processes die with the caller)."""
    cluster = Cluster.up(directory, node_count, tied=True)
    try:
        yield cluster
    finally:
        cluster.down()


def _register(tag: str, directory: Path) -> None:
    REGISTRY.mkdir(parents=True, exist_ok=True)
    (REGISTRY / tag).write_text(str(directory) + "\n")


def _unregister(tag: str) -> None:
    (REGISTRY / tag).unlink(missing_ok=True)
    for directory in (REGISTRY, REGISTRY.parent):
        with contextlib.suppress(OSError):
            directory.rmdir()  # only when empty: other clusters may be registered


def remove_stale_clusters(min_age_s: float = 120.0) -> list[str]:
    """Remove what clusters whose caller was killed left behind; name them.

    Every cluster is registered in ``REGISTRY`` (its tag and directory). One
    is stale when none of its nodes' mount-namespace holders runs any more
    (they die with a killed caller) or its directory is gone. What is left
    then is found by name and namespace only, never by a recorded pid (which
    may belong to someone else by now): processes in the nodes' mount
    namespaces (runtime shims), the cgroup roots (containers), the pod
    network namespaces those processes still hold, and the cluster's netns.
    """
    removed = []
    for entry in sorted(REGISTRY.glob("*")) if REGISTRY.is_dir() else []:
        tag, directory = entry.name, Path(entry.read_text().strip())
        if time.time() - entry.stat().st_mtime < min_age_s:
            continue
        state: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            state = json.loads((directory / STATE_FILE).read_text())
        holders = [pid for key, pid in state.get("pids", {}).items() if key.endswith("/holder")]
        if any(_holder_alive(int(pid)) for pid in holders):
            continue
        for mnt_ns in state.get("mount_namespaces", {}).values():
            survivors = processes_in_mount_namespace(mnt_ns)
            pod_netns = _pod_netns_held_by(survivors)
            kill_mount_namespace(mnt_ns)
            for name in pod_netns:
                subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        for hierarchy in cgroups.hierarchies():
            for root in hierarchy.glob(f"wbc-{tag}-*"):
                cgroups.remove("/" + root.name)
        names = [name for name in _netns_names() if name.startswith(f"wbc-{tag}-")]
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        (directory / STATE_FILE).unlink(missing_ok=True)
        _unregister(tag)
        removed.append(f"cluster {tag} of {directory}")
    return removed


def _holder_alive(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return command[:2] == [b"sleep", b"infinity"]


def _pod_netns_held_by(pids: list[int]) -> list[str]:
    for pid in pids:
        with contextlib.suppress(OSError):
            mounts = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
            return [
                line.split()[4].rsplit("/", 1)[-1]
                for line in mounts
                if line.split()[4].startswith("/run/netns/cni-")
            ]
    return []


def _netns_names() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split(" ", 1)[0] for line in listed.stdout.splitlines() if line.strip()]
