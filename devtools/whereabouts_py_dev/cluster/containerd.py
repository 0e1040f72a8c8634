"""A node's containerd: its configuration and command line.

Inside a node's mount namespace (``node.py``) containerd finds its usual
paths (``/var/lib/containerd``, ``/run/containerd``, ``/opt/cni/bin``,
``/etc/cni/net.d``), each bound to the node's own directory, so several
nodes' containerds on one machine share nothing. Settings this machine needs:

* ``restrict_oom_score_adj = true``: root here lacks CAP_SYS_RESOURCE, so
  lowering a process' ``oom_score_adj`` is refused; without it every sandbox
  fails with runc's "can't get final child's PID from pipe: EOF".
* ``SystemdCgroup = false``: cgroups v1 through cgroupfs, like the kubelet.
* the sandbox image is our pause image (no registry is reachable).
"""

from __future__ import annotations

from pathlib import Path

from whereabouts_py_dev.cluster.images import PAUSE_IMAGE

SOCKET = Path("/run/containerd/containerd.sock")  # inside the node's mount namespace
CNI_BIN_DIR = Path("/opt/cni/bin")
CNI_CONF_DIR = Path("/etc/cni/net.d")


def config() -> str:
    """containerd 1.6's configuration (format version 2) for a node."""
    return f"""\
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
oom_score = 0
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
]

[grpc]
  address = "{SOCKET}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  max_concurrent_downloads = 1

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{CNI_CONF_DIR}"
    max_conf_num = 1
"""


def command(containerd: Path, config_path: Path) -> list[str]:
    return [str(containerd), "--config", str(config_path), "--log-level", "info"]
