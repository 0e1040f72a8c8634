"""A node's CNI: Multus (the pinned thin plugin) with a bridge default network.

The node's ``/opt/cni/bin`` holds Multus and links to Debian's reference
plugins; its ``/etc/cni/net.d`` holds one configuration, Multus', whose
default delegate is the bridge plugin (``cni0``, the node's gateway) with
host-local on the node's pod CIDR. Secondary networks come from the pod's
``k8s.v1.cni.cncf.io/networks`` annotation, as Multus reads it from the
apiserver with the node's identity.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from whereabouts_py_dev.cluster.containerd import CNI_BIN_DIR, CNI_CONF_DIR
from whereabouts_py_dev.cluster.node import Node
from whereabouts_py_dev.netns import LabError
from whereabouts_py_dev.runtime import CNI_BIN_DIR as REFERENCE_PLUGIN_DIR

MULTUS_CONF = "00-multus.conf"
DEFAULT_NETWORK = "devcluster-pods"
# The reference plugins the default network and the example NADs name.
REFERENCE_PLUGINS = (
    "bridge", "host-local", "ipvlan", "loopback", "macvlan", "portmap", "ptp", "sbr", "static",
    "tuning", "vlan",
)  # fmt: skip


def multus_config(node: Node, kubeconfig: Path) -> dict[str, Any]:
    """What the node's ``/etc/cni/net.d/00-multus.conf`` holds (paths as the node sees them)."""
    return {
        "cniVersion": "1.0.0",
        "name": "multus-cni-network",
        "type": "multus",
        "kubeconfig": str(kubeconfig),
        "binDir": str(CNI_BIN_DIR),
        "confDir": str(CNI_CONF_DIR),
        "cniDir": "/var/lib/cni/multus",
        "logFile": "/var/lib/cni/multus/multus.log",
        "logLevel": "verbose",
        "logToStderr": False,
        "delegates": [
            {
                "cniVersion": "1.0.0",
                "name": DEFAULT_NETWORK,
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "isDefaultGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": node.pod_cidr}]],
                },
            }
        ],
    }


def install(node: Node, multus: Path) -> None:
    """Fill the node's CNI bin and configuration dirs: Multus, reference plugins, Multus' config."""
    missing = [name for name in REFERENCE_PLUGINS if not (REFERENCE_PLUGIN_DIR / name).is_file()]
    if missing:
        raise LabError(
            f"reference CNI plugins missing in {REFERENCE_PLUGIN_DIR}: {', '.join(missing)} "
            "(install the Debian package containernetworking-plugins: make setup)"
        )
    shutil.copy2(multus, node.cni_bin_dir / "multus")
    for name in REFERENCE_PLUGINS:
        link = node.cni_bin_dir / name
        if not link.exists():
            link.symlink_to(REFERENCE_PLUGIN_DIR / name)
    (node.cni_conf_dir / MULTUS_CONF).write_text(
        json.dumps(multus_config(node, node.kubeconfig), indent=2) + "\n"
    )
