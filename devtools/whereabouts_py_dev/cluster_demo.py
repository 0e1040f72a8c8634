"""The real-cluster demo (``whereabouts-py-dev demo --cluster``).

Two real nodes (``devcluster up --nodes 2``: kubelets, containerd, Multus),
the product image built here and installed as users install it
(``kubectl apply -k manifests/overlays/devcluster``), then a Deployment on the
dual-stack macvlan example spread over both nodes: the pods, their addresses,
a cross-node ping over both families, the IPPools, and what host-local does
with the same range for contrast. Each step names the command it runs.
"""

from __future__ import annotations

import ipaddress
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from whereabouts_py_dev.cluster import Cluster, import_image
from whereabouts_py_dev.cluster.images import LAB_TOOLS_IMAGE
from whereabouts_py_dev.image import ensure_product_image

REPOSITORY = Path(__file__).resolve().parents[2]
OVERLAY = REPOSITORY / "manifests" / "overlays" / "devcluster"
EXAMPLE = REPOSITORY / "manifests" / "examples" / "macvlan-dual-stack.yaml"
INSTALL_NAMESPACE = "kube-system"
NAMESPACE = "demo"
NETWORKS = "k8s.v1.cni.cncf.io/networks"
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"
HOST_LOCAL_RANGE = "10.67.0.0/24"
WAIT_S = 180.0


class DemoError(RuntimeError):
    """A step of the demo did not get where it should; the message says which."""


def _say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _kubectl(cluster: Cluster, *args: str) -> None:
    print(f"$ kubectl {' '.join(args)}", flush=True)
    print(cluster.kubectl(*args).stdout.rstrip(), flush=True)


def _pods(cluster: Cluster, selector: str) -> list[dict[str, Any]]:
    got = cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(got)["items"]
    return items


def _net1(pod: dict[str, Any]) -> list[str]:
    status = json.loads(pod["metadata"].get("annotations", {}).get(NETWORK_STATUS, "[]"))
    return [ip for entry in status if entry.get("interface") == "net1" for ip in entry["ips"]]


def _running(cluster: Cluster, selector: str, count: int, families: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = [p for p in _pods(cluster, selector) if "deletionTimestamp" not in p["metadata"]]
        ready = [
            p for p in found if p["status"].get("phase") == "Running" and len(_net1(p)) == families
        ]
        if len(found) == len(ready) == count:
            return sorted(ready, key=lambda p: (p["spec"]["nodeName"], p["metadata"]["name"]))
        time.sleep(1)
    described = cluster.kubectl("describe", "pods", "-n", NAMESPACE, "-l", selector, check=False)
    raise DemoError(f"pods {selector} not Running after {WAIT_S:.0f}s:\n{described.stdout[-4000:]}")


def _deployment(name: str, network: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {NETWORKS: network}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "DoNotSchedule",
                            "labelSelector": {"matchLabels": labels},
                        }
                    ],
                    "containers": [
                        {
                            "name": "tools",
                            "image": LAB_TOOLS_IMAGE,
                            "imagePullPolicy": "Never",
                            "command": ["sleep", "3600"],
                        }
                    ],
                },
            },
        },
    }


def _host_local_nad() -> dict[str, Any]:
    config = {
        "cniVersion": "1.0.0",
        "name": "host-local-net",
        "type": "macvlan",
        "master": "eth1",
        "mode": "bridge",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": HOST_LOCAL_RANGE}]]},
    }
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "host-local-net", "namespace": NAMESPACE},
        "spec": {"config": json.dumps(config)},
    }


def _apply(cluster: Cluster, body: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input_text=json.dumps(body))


def _install(cluster: Cluster) -> None:
    _say("the product image, built here from the Dockerfile, into both nodes' containerd")
    archive = ensure_product_image()
    import_image(archive, cluster.nodes)
    print(f"  {archive.name} imported into {', '.join(n.name for n in cluster.nodes)}")
    _say("installed as users install it")
    _kubectl(cluster, "apply", "-k", str(OVERLAY.relative_to(REPOSITORY)))
    for kind in ("daemonset/whereabouts-daemon", "deployment/whereabouts-reconciler"):
        cluster.kubectl("rollout", "status", "-n", INSTALL_NAMESPACE, kind, "--timeout=180s")
    _kubectl(cluster, "get", "pods", "-n", INSTALL_NAMESPACE, "-o", "wide")


def _ping(cluster: Cluster, source: dict[str, Any], address: str) -> str:
    family = "-6" if ":" in address else "-4"
    for _ in range(5):
        done = cluster.kubectl(
            "exec", "-n", NAMESPACE, source["metadata"]["name"], "--",
            "ping", family, "-c", "1", "-W", "2", "-I", "net1", address,
            check=False,
        )  # fmt: skip
        if done.returncode == 0 and "1 packets received" in done.stdout:
            return "reply"
        time.sleep(1)
    return "NO REPLY"


def show(cluster: Cluster) -> int:
    """The demo on a running cluster; its namespace is removed at the end, the install stays."""
    _install(cluster)
    cluster.kubectl("create", "namespace", NAMESPACE)
    try:
        deadline = time.monotonic() + 30
        while cluster.kubectl("get", "sa", "-n", NAMESPACE, "default", check=False).returncode:
            if time.monotonic() > deadline:
                raise DemoError(f"no ServiceAccount default in namespace {NAMESPACE}")
            time.sleep(0.5)
        return _show(cluster)
    finally:
        cluster.kubectl("delete", "namespace", NAMESPACE, "--timeout=120s", check=False)


def _show(cluster: Cluster) -> int:
    _say("the dual-stack macvlan example, and four pods spread over both nodes")
    _kubectl(cluster, "apply", "-n", NAMESPACE, "-f", str(EXAMPLE.relative_to(REPOSITORY)))
    _apply(cluster, _deployment("web", "macvlan-dual-stack", 4))
    web = _running(cluster, "app=web", 4, 2)
    _kubectl(cluster, "get", "pods", "-n", NAMESPACE, "-o", "wide")

    _say("their net1 addresses (network-status written by Multus)")
    for pod in web:
        print(f"  {pod['spec']['nodeName']}  {pod['metadata']['name']:24s} {', '.join(_net1(pod))}")
    addresses = [ip for pod in web for ip in _net1(pod)]
    unique = len(set(addresses)) == len(addresses)
    print(f"  {len(addresses)} addresses, {'all distinct' if unique else 'DUPLICATES'}")

    _say("a ping from node-a to node-b over net1, both families")
    source = next(p for p in web if p["spec"]["nodeName"] == "node-a")
    target = next(p for p in web if p["spec"]["nodeName"] == "node-b")
    answers = []
    for address in _net1(target):
        answer = _ping(cluster, source, address)
        answers.append(answer)
        print(f"  {source['metadata']['name']} (node-a) -> {address} (node-b): {answer}")

    _say("the cluster-wide pools")
    _kubectl(cluster, "get", "ippools", "-n", INSTALL_NAMESPACE)

    _say(f"for contrast, host-local on {HOST_LOCAL_RANGE}: each node allocates on its own")
    _apply(cluster, _host_local_nad())
    _apply(cluster, _deployment("local", "host-local-net", 2))
    local = _running(cluster, "app=local", 2, 1)
    for pod in local:
        print(f"  {pod['spec']['nodeName']}  {pod['metadata']['name']:24s} {', '.join(_net1(pod))}")
    held = [ip for pod in local for ip in _net1(pod)]
    duplicate = len(set(held)) < len(held)
    if duplicate:
        print("  the same address on both nodes, on one segment: a duplicate")
    in_range = all(
        ipaddress.ip_address(ip) in ipaddress.ip_network(HOST_LOCAL_RANGE) for ip in held
    )
    ok = unique and answers == ["reply"] * len(answers) and duplicate and in_range
    _say("done" if ok else "something above did not go as it should")
    return 0 if ok else 1


def run_cluster_demo(directory: Path | None = None) -> int:
    """Start two real nodes, show the demo on them, remove everything."""
    with tempfile.TemporaryDirectory(prefix="wbpy-demo-") as scratch:
        where = directory or Path(scratch) / "cluster"
        _say("two real nodes: kubelet, containerd and Multus each (builds once, then cached)")
        cluster = Cluster.up(where, 2, tied=True)
        try:
            _kubectl(cluster, "get", "nodes", "-o", "wide")
            return show(cluster)
        except DemoError as error:
            print(f"demo: {error}", file=sys.stderr)
            return 1
        finally:
            _say("devcluster down: processes, namespaces, mounts and cgroups removed")
            cluster.down()
