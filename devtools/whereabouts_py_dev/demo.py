"""The demo: two simulated nodes hand out addresses from one cluster-wide pool.

It starts a local control plane, a real node daemon per simulated node, and
runs the real CNI shim as a runtime would, narrating each step with the
kubectl commands an operator would type.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from whereabouts_py.cni.install import install_cni
from whereabouts_py_dev.controlplane import ControlPlane, running
from whereabouts_py_dev.nodes import SimulatedNodes
from whereabouts_py_dev.runtime import invoke, pod_args

NETWORK: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "storage-net",
    "type": "macvlan",
    "master": "eth1",
    "ipam": {
        "type": "whereabouts",
        "range": "192.168.2.0/24",
        "exclude": ["192.168.2.0/28"],
        "gateway": "192.168.2.1",
    },
}
PODS = [("node-a", "web-0"), ("node-b", "web-1"), ("node-a", "web-2"), ("node-b", "db-0")]


def _say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _show(plane: ControlPlane, *args: str) -> None:
    print(f"$ kubectl {' '.join(args)}", flush=True)
    print(plane.kubectl(*args).stdout.rstrip(), flush=True)


def _plugin(plane: ControlPlane, *args: str) -> None:
    """Run the kubectl plugin as kubectl does: found on PATH as kubectl-whereabouts."""
    env = plane.environment()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    print(f"$ kubectl whereabouts {' '.join(args)}", flush=True)
    result = subprocess.run(
        [str(plane.binaries.kubectl), "whereabouts", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    print((result.stdout or result.stderr).rstrip(), flush=True)


def run_demo() -> int:
    _say("Starting a local Kubernetes control plane (kube-apiserver + etcd on loopback)")
    with running() as plane, tempfile.TemporaryDirectory(prefix="wb-demo-") as scratch:
        workdir = Path(scratch)
        _show(plane, "version")
        _say("whereabouts' CRDs are installed")
        _show(plane, "get", "crd")
        shim = install_cni(workdir / "bin")
        _say(f"The CNI plugin is installed as {shim}; each node runs its own daemon")
        with SimulatedNodes(plane, workdir / "nodes", ["node-a", "node-b"]) as nodes:
            _say("The network, as a NetworkAttachmentDefinition would carry it")
            print(json.dumps(NETWORK, indent=2))
            _say("Pods on both nodes attach (CNI ADD through the real shim)")
            for node, pod in PODS:
                outcome = invoke(
                    shim,
                    "ADD",
                    NETWORK,
                    container_id=f"sandbox-{pod}",
                    ifname="net1",
                    netns=f"/var/run/netns/{pod}",
                    args=pod_args("default", pod),
                    env=nodes[node].environment(),
                )
                shown = ", ".join(outcome.addresses()) if outcome.ok else outcome.stdout
                print(f"  {node}  default/{pod:6s} -> {shown}", flush=True)
            _say("One pool, cluster-wide: no address twice, .0-.15 excluded, gateway skipped")
            _show(plane, "get", "ippools", "-A")
            _show(plane, "get", "ippool", "-n", "kube-system", "192.168.2.0-24", "-o", "yaml")
            _show(plane, "get", "overlappingrangeipreservations", "-A")
            _say("The operator's view: kubectl whereabouts (the kubectl-whereabouts plugin)")
            _plugin(plane, "pools")
            _plugin(plane, "show", "192.168.2.0-24")
            _say("web-1 goes away (CNI DEL on node-b) and its address returns to the pool")
            node, pod = PODS[1]
            invoke(
                shim,
                "DEL",
                NETWORK,
                container_id=f"sandbox-{pod}",
                ifname="net1",
                args=pod_args("default", pod),
                env=nodes[node].environment(),
            )
            _show(
                plane,
                "get",
                "ippool",
                "-n",
                "kube-system",
                "192.168.2.0-24",
                "-o",
                "jsonpath={.spec.allocations}",
            )
            print()
        _say("Stopping the daemons and the control plane")
    print("done", file=sys.stderr)
    return 0
