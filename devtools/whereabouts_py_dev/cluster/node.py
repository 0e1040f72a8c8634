"""One node: a network namespace, a mount namespace, a containerd and a kubelet.

A node's processes run in its network namespace (``network.py``) and in a
mount namespace of its own, held open by a small holder process
(``sleep infinity``). In that mount namespace the paths a node's software
and our DaemonSet's hostPath volumes expect are bound to the node's own
directory::

    /opt/cni/bin /etc/cni/net.d /var/lib/cni /run/containerd /var/lib/containerd
    /var/lib/kubelet /var/log/pods /var/log/containers /run/whereabouts-py

so two nodes on one machine never share a CNI configuration, a runtime
state or a kubelet root. Mounts the kubelet and containerd make (volumes,
container root file systems) stay inside that namespace and go with it.
``/run/netns`` is the host's, shared: the pod network namespaces containerd
creates (``cni-*``) are visible, and removable, from the host. The node's
mounts are shared among themselves, as ``/`` is on a systemd host (containers
may ask for HostToContainer propagation), in peer groups of their own, so
nothing else propagates to the host.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whereabouts_py_dev.controlplane import die_with_parent
from whereabouts_py_dev.netns import LabError

# Path inside the node's mount namespace -> the node directory's sub-directory bound there.
NODE_PATHS: dict[str, str] = {
    "/opt/cni/bin": "opt-cni-bin",
    "/etc/cni/net.d": "etc-cni-net.d",
    "/var/lib/cni": "var-lib-cni",
    "/run/containerd": "run-containerd",
    "/var/lib/containerd": "var-lib-containerd",
    "/var/lib/kubelet": "var-lib-kubelet",
    "/var/log/pods": "var-log-pods",
    "/var/log/containers": "var-log-containers",
    "/run/whereabouts-py": "run-whereabouts-py",
}
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Node:
    """Where one node's parts are; its processes are in ``pids`` of the cluster's state."""

    name: str
    index: int
    netns: str
    directory: Path
    ip: str
    pod_cidr: str
    cgroup_root: str

    def host_path(self, node_path: str) -> Path:
        """Where the node's ``node_path`` (e.g. ``/opt/cni/bin``) is, seen from the host."""
        return self.directory / NODE_PATHS[node_path]

    @property
    def cni_bin_dir(self) -> Path:
        return self.host_path("/opt/cni/bin")

    @property
    def cni_conf_dir(self) -> Path:
        return self.host_path("/etc/cni/net.d")

    @property
    def containerd_socket(self) -> Path:
        """containerd's socket seen from the host (``ctr --address`` works with it)."""
        return self.host_path("/run/containerd") / "containerd.sock"

    @property
    def logs(self) -> Path:
        return self.directory / "logs"

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index": self.index,
            "netns": self.netns,
            "directory": str(self.directory),
            "ip": self.ip,
            "pod_cidr": self.pod_cidr,
            "cgroup_root": self.cgroup_root,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Node:
        return cls(
            name=str(data["name"]),
            index=int(data["index"]),
            netns=str(data["netns"]),
            directory=Path(data["directory"]),
            ip=str(data["ip"]),
            pod_cidr=str(data["pod_cidr"]),
            cgroup_root=str(data["cgroup_root"]),
        )

    # --- processes ----------------------------------------------------------------------
    def make_directories(self) -> None:
        for node_path, sub in NODE_PATHS.items():
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
            # The mount point must exist on the host; it stays an empty directory there.
            Path(node_path).mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)

    def start_holder(self, tied: bool) -> int:
        """Start the process that holds the node's mount namespace; return its pid."""
        ready = self.directory / "mounts-ready"
        ready.unlink(missing_ok=True)
        binds = " && ".join(
            f"mount --bind {shlex.quote(str(self.directory / sub))} {shlex.quote(node_path)}"
            for node_path, sub in NODE_PATHS.items()
        )
        # Shared, as "/" is on a systemd host: containerd refuses HostToContainer
        # propagation from a private mount. The peer groups are new ones, so
        # nothing propagates to the host (but /run/netns, already shared with it).
        share = "mount --make-rshared /"
        script = f"{binds} && {share} && touch {shlex.quote(str(ready))} && exec sleep infinity"
        holder = spawn(
            ["nsenter", f"--net=/run/netns/{self.netns}", "--",
             "unshare", "--mount", "--propagation", "unchanged", "--", "sh", "-c", script],
            self.logs / "holder.log",
            tied,
        )  # fmt: skip
        wait_for(
            ready.exists,
            f"node {self.name}'s mount namespace",
            lambda: _log_tail(self.logs / "holder.log"),
            process=holder,
        )
        return holder.pid

    def spawn_inside(
        self, holder: int, command: Sequence[str], log_name: str, tied: bool
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` in the node's network and mount namespaces."""
        enter = ["nsenter", f"--target={holder}", "--mount", "--net", "--"]
        return spawn([*enter, *command], self.logs / log_name, tied)

    def pod_netns_mounts(self, holder: int) -> list[str]:
        """Names of the pod network namespaces (``/run/netns/cni-*``) the node's containerd made."""
        names = []
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{holder}/mountinfo").read_text().splitlines():
                mountpoint = line.split()[4]
                if mountpoint.startswith("/run/netns/cni-"):
                    names.append(mountpoint.rsplit("/", 1)[-1])
        return names


def spawn(command: Sequence[str], log_path: Path, tied: bool) -> subprocess.Popen[bytes]:
    """Start a cluster process in its own session; ``tied``: it dies with its parent."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent if tied else None,  # noqa: PLW1509
        )


def wait_for(
    condition: Any,
    what: str,
    explain: Any,
    *,
    process: subprocess.Popen[bytes] | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> None:
    """Poll ``condition()`` until true; LabError with ``explain()`` on exit or timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            raise LabError(f"{what} exited with status {process.returncode}:\n{explain()}")
        time.sleep(0.1)
    raise LabError(f"{what} not ready after {timeout_s:.0f}s:\n{explain()}")


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def mount_namespace(pid: int) -> str:
    """The mount namespace of ``pid`` (``mnt:[inode]``)."""
    return os.readlink(f"/proc/{pid}/ns/mnt")


def processes_in_mount_namespace(target: str) -> list[int]:
    """Every process in mount namespace ``target`` (containerd, shims, kubelet, holder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(entry / "ns" / "mnt") == target:
                found.append(int(entry.name))
    return found


def kill_mount_namespace(target: str, timeout_s: float = 10.0) -> list[str]:
    """SIGKILL every process in mount namespace ``target``; its mounts go with the last one."""
    pids = processes_in_mount_namespace(target)
    deadline = time.monotonic() + timeout_s
    while pids and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
        pids = [pid for pid in processes_in_mount_namespace(target) if _alive(pid)]
    return [f"process {pid} would not die" for pid in pids]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
