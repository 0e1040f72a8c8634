"""The demo: a local control plane, whereabouts' CRDs, and an IPPool to look at.

It narrates each step and shows the kubectl commands an operator would type.
"""

from __future__ import annotations

import json
import sys

from whereabouts_py.devcluster.controlplane import ControlPlane, running

EXAMPLE_POOL = {
    "apiVersion": "whereabouts.cni.cncf.io/v1alpha1",
    "kind": "IPPool",
    "metadata": {"name": "192.168.2.0-24", "namespace": "kube-system"},
    "spec": {
        "range": "192.168.2.0/24",
        "allocations": {
            "2": {"id": "3f2c1d0e9b8a", "podref": "default/web-0", "ifname": "net1"},
            "3": {"id": "a1b2c3d4e5f6", "podref": "default/web-1", "ifname": "net1"},
        },
    },
}


def _say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _show(plane: ControlPlane, *args: str) -> None:
    print(f"$ kubectl {' '.join(args)}", flush=True)
    print(plane.kubectl(*args).stdout.rstrip(), flush=True)


def run_demo() -> int:
    _say("Starting a local Kubernetes control plane (kube-apiserver + etcd on loopback)")
    with running() as plane:
        _show(plane, "version")
        _say("whereabouts' CRDs are installed")
        _show(plane, "get", "crd")
        _say("An IPPool in the format the Go whereabouts project writes")
        plane.kubectl("create", "-f", "-", input_text=json.dumps(EXAMPLE_POOL))
        _show(plane, "get", "ippools", "-A")
        _show(plane, "get", "ippool", "-n", "kube-system", "192.168.2.0-24", "-o", "yaml")
        _say("Stopping the control plane")
    print("done", file=sys.stderr)
    return 0
