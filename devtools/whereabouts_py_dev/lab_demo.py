"""The lab demo: real Multus on two simulated nodes, one segment, a router.

It builds the lab of ``lab.py`` on a local control plane, attaches pods on
both nodes to the dual-stack macvlan example network, shows their addresses,
a cross-node ping, the IPPools, a release by CNI DEL, and what host-local
would have done instead. Each step names the command an operator would type.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from whereabouts_py_dev.controlplane import ControlPlane, running
from whereabouts_py_dev.lab import Lab, LabPod, examples_dir
from whereabouts_py_dev.netns import ip

POOL_NAMESPACE = "kube-system"
POD_NAMESPACE = "default"
NETWORK = "macvlan-dual-stack"
PODS = (("web-0", "node-a"), ("web-1", "node-b"), ("web-2", "node-a"), ("web-3", "node-b"))


def _say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _kubectl(plane: ControlPlane, *args: str) -> None:
    print(f"$ kubectl {' '.join(args)}", flush=True)
    print(plane.kubectl(*args).stdout.rstrip(), flush=True)


def _net1(lab: Lab, pod: LabPod) -> str:
    return ", ".join(lab.pod_addresses(pod)) or "(none)"


def _attach(lab: Lab, pod: LabPod) -> bool:
    outcome = lab.add(pod)
    if not outcome.ok:
        message = outcome.output.get("msg") if outcome.output else outcome.stdout.strip()
        print(f"  {pod.node}  {pod.ref:16s} Multus ADD failed: {message}", flush=True)
    return outcome.ok


def _network_config(plane: ControlPlane, name: str) -> dict[str, Any]:
    got = json.loads(
        plane.kubectl(
            "get", "network-attachment-definition", "-n", POD_NAMESPACE, name, "-o", "json"
        ).stdout
    )
    config: dict[str, Any] = json.loads(got["spec"]["config"])
    return config


def run_lab_demo() -> int:
    _say("Starting a local Kubernetes control plane (kube-apiserver + etcd on loopback)")
    with running() as plane, tempfile.TemporaryDirectory(prefix="wb-lab-") as scratch:
        _say(f"The example NetworkAttachmentDefinitions ({examples_dir()})")
        _kubectl(plane, "apply", "-n", POD_NAMESPACE, "-k", str(examples_dir()))
        config = _network_config(plane, NETWORK)
        print(json.dumps(config, indent=2))

        _say("Building the lab: two nodes and a router on one layer-2 segment (all in netns)")
        with Lab(plane, Path(scratch) / "lab", pool_namespace=POOL_NAMESPACE) as lab:
            gateways = [_first_host(item["range"]) for item in config["ipam"]["ipRanges"]]
            for gateway in gateways:
                lab.add_router_address(gateway)
            for node in lab.nodes.values():
                print(
                    f"  {node.name}: netns {node.netns}; on the segment: eth1 (macvlan parent), "
                    "eth2 (port of br0, for bridge), eth3 (ipvlan parent)",
                    flush=True,
                )
                for line in ip("-br", "-n", node.netns, "link", "show", "up").splitlines():
                    print(f"    {line}", flush=True)
            print(f"  router: netns {lab.router_netns}", flush=True)
            print("    " + ip("-br", "-n", lab.router_netns, "addr", "show", "dev", "eth1").strip())
            print(
                "  each node runs its own whereabouts-py daemon; Multus finds it through "
                "WHEREABOUTS_PY_SOCKET, which it passes on to the plugins",
                flush=True,
            )

            _say(f"Pods on both nodes ask for {NETWORK} (Multus ADD, as the kubelet would)")
            pods = [
                lab.create_pod(POD_NAMESPACE, name, node, [{"name": NETWORK}])
                for name, node in PODS
            ]
            attached = [pod for pod in pods if _attach(lab, pod)]
            for pod in attached:
                print(f"  {pod.node}  {pod.ref:16s} net1 {_net1(lab, pod)}", flush=True)
            if len(attached) != len(pods):
                return 1

            _say("Multus recorded the addresses in the pod (k8s.v1.cni.cncf.io/network-status)")
            print(json.dumps(lab.network_status(attached[0]), indent=2), flush=True)

            _say("A pod on node-a pings the router and a pod on node-b over net1")
            for pod in attached:
                lab.wait_addresses_usable(pod)
            source, peer = attached[0], attached[1]
            targets = [address.split("/")[0] for address in lab.pod_addresses(peer)]
            targets += [gateway.split("/")[0] for gateway in gateways]
            ok = True
            for target in targets:
                answered = lab.ping_from(source, target)
                ok = ok and answered
                print(
                    f"  {source.ref} ({source.node}) -> {target}: "
                    f"{'reply' if answered else 'NO REPLY'}",
                    flush=True,
                )

            _say("One pool for the whole segment: no address twice, whichever node")
            _kubectl(plane, "get", "ippools", "-n", POOL_NAMESPACE)
            _show_allocations(plane)

            _say(f"{peer.ref} is deleted (Multus DEL on {peer.node}): its addresses return")
            deleted = lab.delete(peer)
            ok = ok and deleted.ok
            _show_allocations(plane)

            _say("The same network with host-local instead: each node only knows itself")
            ok = _host_local_contrast(plane, lab, config) and ok
            _say("Removing the lab: every namespace, link and process it made")
        print(_leftovers(), flush=True)
    print("done", file=sys.stderr)
    return 0 if ok else 1


def _show_allocations(plane: ControlPlane) -> None:
    """Each IPPool entry as address, pod and node (what the IPPools' JSON says)."""
    print(f"$ kubectl get ippools -n {POOL_NAMESPACE} -o json   # allocations, summarised")
    listed = json.loads(plane.kubectl("get", "ippools", "-n", POOL_NAMESPACE, "-o", "json").stdout)
    rows = []
    for item in listed["items"]:
        network = ipaddress.ip_network(item["spec"]["range"])
        for offset, entry in (item["spec"].get("allocations") or {}).items():
            address = network.network_address + int(offset)
            rows.append((address.version, address, entry.get("podref", ""), entry.get("node", "")))
    for _, address, podref, node in sorted(rows):
        print(f"  {address!s:14s} {podref:16s} {node}", flush=True)


def _first_host(cidr: str) -> str:
    """The router's address on a network: its first host, with the prefix."""
    network = ipaddress.ip_network(cidr)
    return f"{network.network_address + 1}/{network.prefixlen}"


def _host_local_contrast(plane: ControlPlane, lab: Lab, config: dict[str, Any]) -> bool:
    v4 = config["ipam"]["ipRanges"][0]
    host_local = {
        **config,
        "name": "macvlan-host-local",
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": v4["range"], "rangeStart": v4["range_start"]}]],
        },
    }
    nad = {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "macvlan-host-local", "namespace": POD_NAMESPACE},
        "spec": {"config": json.dumps(host_local)},
    }
    plane.kubectl("apply", "-f", "-", input_text=json.dumps(nad))
    pods = [
        lab.create_pod(POD_NAMESPACE, f"local-{index}", node, [{"name": "macvlan-host-local"}])
        for index, node in enumerate(("node-a", "node-b"))
    ]
    if not all(_attach(lab, pod) for pod in pods):
        return False
    for pod in pods:
        print(f"  {pod.node}  {pod.ref:16s} net1 {_net1(lab, pod)}", flush=True)
    same = _net1(lab, pods[0]) == _net1(lab, pods[1])
    print(
        "  -> the same address on both nodes, on one segment: a duplicate"
        if same
        else "  -> (unexpectedly different addresses)",
        flush=True,
    )
    return same


def _leftovers() -> str:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    ours = [line.split()[0] for line in listed.stdout.splitlines() if line.startswith("wbl-")]
    return f"  network namespaces left: {', '.join(ours) if ours else 'none'}"
