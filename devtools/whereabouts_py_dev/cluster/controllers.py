"""kube-controller-manager and kube-scheduler: command lines for the host's loopback.

Each has its own identity (the apiserver's built-in RBAC roles
``system:kube-controller-manager`` and ``system:kube-scheduler``). The
controller-manager signs nothing new: it gets the ServiceAccount key the
apiserver verifies with, runs every controller with its own ServiceAccount
(``--use-service-account-credentials``) and publishes the apiserver's CA as
``kube-root-ca.crt`` in every namespace. Node IPAM stays off: each node's pod
CIDR is in its CNI configuration.
"""

from __future__ import annotations

from pathlib import Path

from whereabouts_py_dev.controlplane import ControlPlane, Identity

CONTROLLER_MANAGER = Identity(
    "kube-controller-manager", "system:kube-controller-manager", ("system:authenticated",)
)
SCHEDULER = Identity("kube-scheduler", "system:kube-scheduler", ("system:authenticated",))


def node_identity(node_name: str) -> Identity:
    """A node's user, as the Node authorizer would name it: ``system:node:<name>``.

    Its kubeconfig is ``kubeconfig-<node name>`` in the cluster's directory.
    """
    return Identity(node_name, f"system:node:{node_name}", ("system:nodes", "system:authenticated"))


def controller_manager_command(binary: Path, plane: ControlPlane, port: int) -> list[str]:
    kubeconfig = plane.kubeconfig_for(CONTROLLER_MANAGER.name)
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        "--leader-elect=false",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={plane.service_account_key}",
        f"--root-ca-file={plane.ca_file}",
        "--controllers=*,-nodeipam",
        "--v=1",
    ]


def scheduler_command(binary: Path, plane: ControlPlane, port: int) -> list[str]:
    kubeconfig = plane.kubeconfig_for(SCHEDULER.name)
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        "--leader-elect=false",
        "--v=1",
    ]
