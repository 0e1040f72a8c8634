"""A node's kubelet: its configuration file and command line.

Settings this machine needs:

* ``failCgroupV1: false``: cgroups are v1 here and this kubelet refuses them
  otherwise; ``cgroupDriver: cgroupfs`` as in containerd; ``failSwapOn: false``.
* ``cgroupRoot``: every node's pods live under its own cgroup
  (``/<cgroup root>/kubepods/...``), so nodes on one machine do not share
  ``kubepods``.
* Permissive eviction and image garbage collection: the eviction manager
  cannot read this disk's file-system statistics, and an image removed by the
  garbage collector could never be pulled again (there is no registry).
* The kubelet's API accepts anonymous requests (``AlwaysAllow``): the
  apiserver holds no client certificate for kubelets. It listens only inside
  the node's network namespace.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from whereabouts_py_dev.cluster.containerd import SOCKET

ROOT_DIR = Path("/var/lib/kubelet")  # inside the node's mount namespace


def config(cgroup_root: str) -> dict[str, Any]:
    """The kubelet's configuration file (KubeletConfiguration v1beta1)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root,
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{SOCKET}",
        "address": "0.0.0.0",
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {
            "anonymous": {"enabled": True},
            "webhook": {"enabled": False},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "evictionHard": {
            "memory.available": "1Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "localStorageCapacityIsolation": False,
        "serializeImagePulls": False,
        "resolvConf": "/etc/resolv.conf",
        "clusterDomain": "cluster.local",
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "registerNode": True,
        "nodeStatusUpdateFrequency": "4s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "shutdownGracePeriod": "0s",
    }


def write_config(path: Path, cgroup_root: str) -> None:
    path.write_text(json.dumps(config(cgroup_root), indent=2) + "\n")


def command(
    kubelet: Path, config_path: Path, kubeconfig: Path, node_name: str, node_ip: str
) -> list[str]:
    return [
        str(kubelet),
        f"--config={config_path}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={ROOT_DIR}",
        f"--hostname-override={node_name}",
        f"--node-ip={node_ip}",
        "--v=1",
    ]
