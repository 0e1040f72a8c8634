"""End to end on two real nodes: our image and manifests, kubelets calling Multus calling us.

One ``kubectl apply -k manifests/overlays/devcluster`` serves the module (the
product image is built here if its inputs changed, then imported into both
nodes). Every test works in a namespace of its own, deletes what it made and
leaves the pools, the reservations and ``kubectl whereabouts check`` clean.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from whereabouts_py_dev.cluster import Cluster, cgroups, import_image
from whereabouts_py_dev.cluster.images import LAB_TOOLS_IMAGE
from whereabouts_py_dev.cluster_demo import show
from whereabouts_py_dev.image import ensure_product_image
from whereabouts_py_dev.links import add_address, cable

from .conftest import run_pod, tools_pod, wait_service_account
from .test_nodes import pod_netns

pytestmark = [pytest.mark.kube, pytest.mark.netns]

REPOSITORY = Path(__file__).resolve().parents[2]
OVERLAY = REPOSITORY / "manifests" / "overlays" / "devcluster"
EXAMPLES = REPOSITORY / "manifests" / "examples"
INSTALL_NAMESPACE = "kube-system"
LEASE_NAMESPACE = "whereabouts-py-leases"
NETWORKS = "k8s.v1.cni.cncf.io/networks"
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"
KUBECTL_WHEREABOUTS = Path(os.environ.get("VIRTUAL_ENV", REPOSITORY / ".venv")) / "bin"
TIMEOUT_S = 120.0


# --- waiting and reading ---------------------------------------------------------------------
def wait_until(what: str, probe: Callable[[], Any], timeout_s: float = TIMEOUT_S) -> Any:
    """``probe()`` once it is truthy; AssertionError naming ``what`` and its last value if not."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(1.0)
    raise AssertionError(f"{what}: not after {timeout_s:.0f}s (last: {last!r})")


def get_json(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(cluster, "pods", "-n", namespace, "-l", selector)[
        "items"
    ]
    return items


def net1_ips(pod: dict[str, Any]) -> list[str]:
    """The addresses of net1 in the pod's network-status (Multus writes it after the ADD)."""
    annotations = pod["metadata"].get("annotations", {})
    status = json.loads(annotations.get(NETWORK_STATUS, "[]"))
    return [ip for entry in status if entry.get("interface") == "net1" for ip in entry["ips"]]


def running_with_addresses(
    cluster: Cluster, namespace: str, selector: str, count: int, families: int
) -> list[dict[str, Any]]:
    """The ``count`` pods of ``selector``, once all are Running with their net1 addresses."""

    def probe() -> list[dict[str, Any]] | None:
        found = [p for p in pods(cluster, namespace, selector) if not _terminating(p)]
        ready = [
            p
            for p in found
            if p["status"].get("phase") == "Running" and len(net1_ips(p)) == families
        ]
        return ready if len(found) == count and len(ready) == count else None

    try:
        result: list[dict[str, Any]] = wait_until(
            f"{count} pods {selector} Running with net1", probe
        )
    except AssertionError:
        described = cluster.kubectl("describe", "pods", "-n", namespace, "-l", selector).stdout
        raise AssertionError(f"pods {selector} in {namespace}:\n{described[-6000:]}") from None
    return result


def _terminating(pod: dict[str, Any]) -> bool:
    return "deletionTimestamp" in pod["metadata"]


def allocations(cluster: Cluster) -> list[tuple[str, str]]:
    """Every (address, podref) held in our IPPools, a block's Go mirror counted once."""
    held: set[tuple[str, str]] = set()
    for pool in get_json(cluster, "ippools", "-n", INSTALL_NAMESPACE)["items"]:
        network = ipaddress.ip_network(pool["spec"]["range"], strict=False)
        for offset, entry in (pool["spec"].get("allocations") or {}).items():
            held.add((str(network.network_address + int(offset)), entry["podref"]))
    return sorted(held)


def reservations(cluster: Cluster) -> list[tuple[str, str]]:
    """Every (address, podref) of the overlapping-range reservations."""
    items = get_json(cluster, "overlappingrangeipreservations", "-n", INSTALL_NAMESPACE)["items"]
    return sorted(
        (
            str(ipaddress.ip_address(item["metadata"]["name"].replace("-", ":"))),
            item["spec"]["podref"],
        )
        for item in items
    )


def held_by(cluster: Cluster, namespace: str) -> dict[str, list[str]]:
    """Addresses the pools hold for pods of ``namespace`` (podref -> sorted addresses).

    Fails unless the reservations say exactly the same: read at rest, not
    while an ADD or DEL is between the two objects.
    """
    in_pools, in_reservations = holdings(cluster, namespace)
    assert in_pools == in_reservations, (in_pools, in_reservations)
    return in_pools


def holdings(cluster: Cluster, namespace: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """What the pools and what the reservations hold for pods of ``namespace``."""
    found: list[dict[str, list[str]]] = []
    for entries in (allocations(cluster), reservations(cluster)):
        held: dict[str, list[str]] = {}
        for address, podref in entries:
            if podref.startswith(f"{namespace}/"):
                held.setdefault(podref, []).append(address)
        found.append({key: sorted(value) for key, value in held.items()})
    return found[0], found[1]


def nothing_held(cluster: Cluster, namespace: str) -> bool:
    return holdings(cluster, namespace) == ({}, {})


def assert_holdings_settle(
    cluster: Cluster, namespace: str, expected: dict[str, list[str]], timeout_s: float = 60
) -> None:
    """Pools and reservations come to hold exactly ``expected`` for the namespace's pods."""
    try:
        wait_until(
            "pools and reservations holding the pods' addresses",
            lambda: holdings(cluster, namespace) == (expected, expected),
            timeout_s,
        )
    except AssertionError:
        pools, reserved = holdings(cluster, namespace)
        raise AssertionError(
            f"expected {expected}\npools hold {pools}\nreservations {reserved}"
        ) from None


def expected_holdings(pod_list: list[dict[str, Any]], namespace: str) -> dict[str, list[str]]:
    return {
        f"{namespace}/{p['metadata']['name']}": sorted(
            str(ipaddress.ip_address(ip)) for ip in net1_ips(p)
        )
        for p in pod_list
    }


def whereabouts(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(KUBECTL_WHEREABOUTS / "kubectl-whereabouts"),
            *args,
            "--kubeconfig",
            str(cluster.kubeconfig),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_check_clean(cluster: Cluster) -> None:
    checked = whereabouts(cluster, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def ping(cluster: Cluster, namespace: str, pod: str, address: str) -> None:
    """``pod`` reaches ``address`` over net1 (a few tries: a new IPv6 address may be settling)."""
    family = "-6" if ":" in address else "-4"
    last = ""
    for _ in range(5):
        done = cluster.kubectl(
            "exec", "-n", namespace, pod, "--",
            "ping", family, "-c", "1", "-W", "2", "-I", "net1", address,
            check=False,
        )  # fmt: skip
        last = done.stdout + done.stderr
        if done.returncode == 0 and "1 packets received" in done.stdout:
            return
        time.sleep(1)
    raise AssertionError(f"{namespace}/{pod} cannot ping {address} over net1:\n{last}")


# --- objects -----------------------------------------------------------------------------------
def deployment(name: str, network: str, replicas: int, spread: bool = True) -> dict[str, Any]:
    """Lab-tools pods attached to ``network``, spread evenly over the nodes."""
    labels = {"app": name}
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {
                "name": "tools",
                "image": LAB_TOOLS_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["sleep", "3600"],
            }
        ],
    }
    if spread:
        spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": labels},
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {NETWORKS: network}},
                "spec": spec,
            },
        },
    }


def nad(name: str, ipam: dict[str, Any]) -> dict[str, Any]:
    config = {"cniVersion": "1.0.0", "name": name, "type": "macvlan", "master": "eth1",
              "mode": "bridge", "ipam": {"type": "whereabouts", **ipam}}  # fmt: skip
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name},
        "spec": {"config": json.dumps(config)},
    }


def apply(cluster: Cluster, namespace: str, body: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input_text=json.dumps(body))


def scale(cluster: Cluster, namespace: str, name: str, replicas: int) -> None:
    cluster.kubectl("scale", "-n", namespace, f"deployment/{name}", f"--replicas={replicas}")


# --- fixtures ----------------------------------------------------------------------------------
@contextlib.contextmanager
def product_installed(cluster: Cluster) -> Iterator[Cluster]:
    """The product, installed as users do it, on both nodes; removed at the end."""
    try:
        import_image(ensure_product_image(), cluster.nodes)
        cluster.kubectl("apply", "-k", str(OVERLAY))
        for kind in ("daemonset/whereabouts-daemon", "deployment/whereabouts-reconciler"):
            done = cluster.kubectl(
                "rollout", "status", "-n", INSTALL_NAMESPACE, kind, "--timeout=180s", check=False
            )
            if done.returncode != 0:
                described = cluster.kubectl(
                    "describe", "pods", "-n", INSTALL_NAMESPACE, check=False
                ).stdout
                raise AssertionError(f"{kind} not rolled out: {done.stderr}\n{described[-8000:]}")
        yield cluster
    finally:
        cluster.kubectl(
            "delete", "-k", str(OVERLAY), "--ignore-not-found", "--wait=true", check=False
        )


@pytest.fixture(scope="module")
def installed(cluster: Cluster) -> Iterator[Cluster]:
    """The product, installed as users do it, on both nodes."""
    with product_installed(cluster):
        yield cluster


@pytest.fixture
def namespace(installed: Cluster) -> Iterator[str]:
    """A namespace of the test's own; its pods are deleted (their addresses freed) at the end."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    installed.kubectl("create", "namespace", name)
    wait_service_account(installed, name)
    yield name
    installed.kubectl("delete", "namespace", name, "--wait=true", "--timeout=120s", check=False)


# --- tests -------------------------------------------------------------------------------------
def test_the_daemonset_and_reconciler_run_from_the_manifests(installed: Cluster) -> None:
    daemonset = get_json(installed, "daemonset", "-n", INSTALL_NAMESPACE, "whereabouts-daemon")
    assert daemonset["status"]["numberReady"] == daemonset["status"]["desiredNumberScheduled"] == 2
    daemon_pods = pods(installed, INSTALL_NAMESPACE, "app.kubernetes.io/name=whereabouts-daemon")
    assert sorted(p["spec"]["nodeName"] for p in daemon_pods) == ["node-a", "node-b"]
    for pod in daemon_pods:
        (init,) = pod["status"]["initContainerStatuses"]
        assert init["state"]["terminated"]["exitCode"] == 0, init
        (daemon,) = pod["status"]["containerStatuses"]
        # Ready means its readiness probe (/readyz) passed; no restart means liveness did too.
        assert daemon["ready"] is True and daemon["restartCount"] == 0, daemon
    for node in installed.nodes:
        # The shim, as the node (its kubelet and Multus) sees its /opt/cni/bin.
        holder = installed.pids[f"{node.name}/holder"]
        shim = Path(f"/proc/{holder}/root/opt/cni/bin/whereabouts")
        assert shim.is_file() and os.access(shim, os.X_OK), shim
        answered = subprocess.run(
            ["nsenter", "-t", str(holder), "-m", "-n", "/opt/cni/bin/whereabouts"],
            env={"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"},
            input="{}",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert answered.returncode == 0, answered.stderr
        assert "1.0.0" in json.loads(answered.stdout)["supportedVersions"]

    reconciler = get_json(
        installed, "deployment", "-n", INSTALL_NAMESPACE, "whereabouts-reconciler"
    )
    assert reconciler["status"]["readyReplicas"] == 2
    names = {
        p["metadata"]["name"]
        for p in pods(installed, INSTALL_NAMESPACE, "app.kubernetes.io/name=whereabouts-reconciler")
        if p["status"].get("phase") == "Running"
    }
    assert len(names) == 2

    def leader() -> str | None:
        leases = get_json(installed, "leases", "-n", LEASE_NAMESPACE)["items"]
        holders = [lease["spec"].get("holderIdentity") for lease in leases]
        leading = [h for h in holders if h in names]
        return leading[0] if len(leading) == 1 else None

    assert wait_until("one reconciler replica leading", leader, 60) in names


def _spread_and_ping(cluster: Cluster, namespace: str, app: str, families: int) -> None:
    running = running_with_addresses(cluster, namespace, f"app={app}", 4, families)
    by_node: dict[str, list[dict[str, Any]]] = {}
    for pod in running:
        by_node.setdefault(pod["spec"]["nodeName"], []).append(pod)
    assert sorted(by_node) == ["node-a", "node-b"]
    addresses = [ip for pod in running for ip in net1_ips(pod)]
    assert len(set(addresses)) == len(addresses) == 4 * families, addresses
    for pod in running:
        versions = sorted(ipaddress.ip_address(ip).version for ip in net1_ips(pod))
        assert versions == ([4, 6] if families == 2 else [4]), pod["metadata"]["name"]
        shown = cluster.kubectl(
            "exec", "-n", namespace, pod["metadata"]["name"], "--", "ip", "addr", "show", "net1"
        ).stdout
        for ip in net1_ips(pod):
            assert f" {ip}/" in shown, (ip, shown)
    assert_holdings_settle(cluster, namespace, expected_holdings(running, namespace))
    source, target = by_node["node-a"][0], by_node["node-b"][0]
    for address in net1_ips(target):
        ping(cluster, namespace, source["metadata"]["name"], address)


def test_macvlan_dual_stack_pods_spread_over_both_nodes_get_unique_addresses(
    installed: Cluster, namespace: str
) -> None:
    installed.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "macvlan-dual-stack.yaml"))
    apply(installed, namespace, deployment("dual", "macvlan-dual-stack", 4))
    _spread_and_ping(installed, namespace, "dual", 2)
    scale(installed, namespace, "dual", 0)
    wait_until(
        "the addresses freed by the kubelet's DEL", lambda: nothing_held(installed, namespace), 60
    )
    assert_check_clean(installed)


@pytest.fixture
def bridge_ports(installed: Cluster) -> Iterator[None]:
    """Each node gets ``eth2`` on the segment as the port of ``br0``, as the bridge example says."""
    topology = installed.topology
    made: list[str] = []
    try:
        for index, node in enumerate(installed.nodes):
            netns = topology.node(node.name)
            cable(topology.segment, netns, "eth2", f"b{index}")
            made.append(netns)
            subprocess.run(["ip", "-n", netns, "link", "add", "br0", "type", "bridge"], check=True)
            subprocess.run(["ip", "-n", netns, "link", "set", "eth2", "master", "br0"], check=True)
            subprocess.run(["ip", "-n", netns, "link", "set", "br0", "up"], check=True)
        add_address(topology.router, "eth1", "10.61.0.1/24")
        yield
    finally:
        for netns in made:
            subprocess.run(["ip", "-n", netns, "link", "del", "eth2"], check=False)
            subprocess.run(["ip", "-n", netns, "link", "del", "br0"], check=False)
        subprocess.run(
            ["ip", "-n", topology.router, "addr", "del", "10.61.0.1/24", "dev", "eth1"], check=False
        )


def test_bridge_pods_spread_over_both_nodes_get_unique_addresses(
    installed: Cluster, namespace: str, bridge_ports: None
) -> None:
    installed.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "bridge.yaml"))
    apply(installed, namespace, deployment("bridged", "bridge-net", 4))
    _spread_and_ping(installed, namespace, "bridged", 1)
    running = pods(installed, namespace, "app=bridged")
    # The gateway the NAD names is never handed out.
    assert "10.61.0.1" not in [ip for pod in running for ip in net1_ips(pod)]
    scale(installed, namespace, "bridged", 0)
    wait_until(
        "the addresses freed by the kubelet's DEL", lambda: nothing_held(installed, namespace), 60
    )
    assert_check_clean(installed)


def test_the_seventh_pod_of_a_six_address_range_waits_with_our_error_until_one_leaves(
    installed: Cluster, namespace: str
) -> None:
    apply(installed, namespace, nad("six", {"range": "10.62.0.0/29"}))
    apply(installed, namespace, deployment("six", "six", 6))
    six = running_with_addresses(installed, namespace, "app=six", 6, 1)
    assert sorted(ip for pod in six for ip in net1_ips(pod)) == [
        f"10.62.0.{i}" for i in range(1, 7)
    ]
    apply(installed, namespace, deployment("seventh", "six", 1, spread=False))

    def refused() -> list[str]:
        events = get_json(installed, "events", "-n", namespace)["items"]
        return [
            event["message"]
            for event in events
            if event["involvedObject"].get("name", "").startswith("seventh-")
            and event["reason"] == "FailedCreatePodSandBox"
            and "no free address in 10.62.0.0/29" in event["message"]
        ]

    said = wait_until("the seventh pod refused with our error", refused, 90)
    assert "all 6 assignable addresses are allocated or reserved" in said[0], said[0]
    (seventh,) = pods(installed, namespace, "app=seventh")
    name = seventh["metadata"]["name"]
    (waiting,) = seventh["status"]["containerStatuses"]
    assert seventh["status"]["phase"] == "Pending"
    assert waiting["state"]["waiting"]["reason"] == "ContainerCreating", waiting
    described = installed.kubectl("describe", "pod", "-n", namespace, name).stdout
    assert "no free address in 10.62.0.0/29" in described
    assert_holdings_settle(installed, namespace, expected_holdings(six, namespace))

    scale(installed, namespace, "six", 5)
    (started,) = running_with_addresses(installed, namespace, "app=seventh", 1, 1)
    assert started["metadata"]["name"] == name
    five = running_with_addresses(installed, namespace, "app=six", 5, 1)
    everyone = [*five, started]
    assert sorted(ip for pod in everyone for ip in net1_ips(pod)) == [
        f"10.62.0.{i}" for i in range(1, 7)
    ]
    assert_holdings_settle(installed, namespace, expected_holdings(everyone, namespace))
    assert_check_clean(installed)


def attached_pod(name: str, node: str, network: str) -> dict[str, Any]:
    body = tools_pod(name, node, {NETWORKS: network})
    return body


def test_deleting_a_pod_frees_its_address_within_seconds(
    installed: Cluster, namespace: str
) -> None:
    apply(installed, namespace, nad("freed", {"range": "10.63.0.0/24"}))
    pod = run_pod(installed, namespace, attached_pod("short-lived", "node-b", "freed"))
    wait_until("its address held", lambda: held_by(installed, namespace), 30)
    assert held_by(installed, namespace) == expected_holdings([pod], namespace) != {}
    started = time.monotonic()
    installed.kubectl("delete", "pod", "-n", namespace, "short-lived", "--wait=false")
    wait_until(
        "the address freed by the kubelet's DEL", lambda: nothing_held(installed, namespace), 30
    )
    assert time.monotonic() - started < 15
    assert_check_clean(installed)


def test_a_pod_force_deleted_while_its_kubelet_is_down_is_freed_once(
    installed: Cluster, namespace: str
) -> None:
    """The reconciler frees it; the sandbox torn down later frees nothing of its successor.

    The range has one address: the successor can only get it once the
    reconciler freed it, and the old sandbox's DEL must leave it alone.
    """
    one = {"range": "10.64.0.0/24", "range_start": "10.64.0.10", "range_end": "10.64.0.10"}
    apply(installed, namespace, nad("one", one))
    old = run_pod(installed, namespace, attached_pod("old", "node-b", "one"))
    assert net1_ips(old) == ["10.64.0.10"]
    old_netns = pod_netns(old["status"]["podIP"])
    installed.stop_kubelet("node-b")
    try:
        installed.kubectl(
            "delete", "pod", "-n", namespace, "old", "--force", "--grace-period=0", "--wait=false"
        )
        wait_until(
            "the reconciler freeing the force-deleted pod's address",
            lambda: nothing_held(installed, namespace),
            90,
        )
        new = run_pod(installed, namespace, attached_pod("new", "node-a", "one"))
        assert net1_ips(new) == ["10.64.0.10"]
        assert_holdings_settle(installed, namespace, {f"{namespace}/new": ["10.64.0.10"]})
        # The old sandbox still runs on node-b, its address now the new pod's.
        assert Path(f"/run/netns/{old_netns}").exists()
    finally:
        installed.start_kubelet("node-b")
    installed.wait_ready(timeout_s=60)
    wait_until(
        "the returning kubelet tearing the old sandbox down",
        lambda: not Path(f"/run/netns/{old_netns}").exists(),
        90,
    )
    time.sleep(3)  # anything the DEL would wrongly free, it has freed by now
    assert held_by(installed, namespace) == {f"{namespace}/new": ["10.64.0.10"]}
    assert_check_clean(installed)
    leaks = whereabouts(installed, "leaks")
    assert leaks.returncode == 0, leaks.stdout + leaks.stderr


def pod_netns_of_node(cgroup_root: str) -> list[str]:
    """The ``cni-*`` namespaces entered by the node's pods (``/run/netns`` is every node's)."""
    inodes = set()
    for pid in cgroups.processes(cgroup_root):
        with contextlib.suppress(OSError):
            inodes.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
    return sorted(
        entry.name for entry in Path("/run/netns").glob("cni-*") if entry.stat().st_ino in inodes
    )


def start_kubelet_until_it_stays(cluster: Cluster, node: str, attempts: int = 12) -> None:
    """Start the node's kubelet again as its service manager would, until it keeps running.

    A kubelet started while the restarted containerd is still loading its
    sandboxes exits at once ("server is not initialized yet").
    """
    for _ in range(attempts):
        cluster.start_kubelet(node)
        time.sleep(5)
        state = Path(f"/proc/{cluster.pids[f'{node}/kubelet']}/stat").read_text()
        if state.rsplit(")", 1)[-1].split()[0] != "Z":
            return
    said = (cluster.node(node).logs / "kubelet.log").read_text()[-3000:]
    raise AssertionError(f"node {node}'s kubelet keeps exiting:\n{said}")


def test_a_restarted_node_gives_its_pods_new_addresses_and_keeps_nothing_of_the_old(
    installed: Cluster, namespace: str
) -> None:
    """A reboot: containers, kubelet and runtime stop, the pod network namespaces go."""
    apply(installed, namespace, nad("reboot", {"range": "10.65.0.0/24"}))
    apply(installed, namespace, deployment("reboot", "reboot", 4))
    before = running_with_addresses(installed, namespace, "app=reboot", 4, 1)
    node = installed.node("node-b")
    on_b = [p["metadata"]["uid"] for p in before if p["spec"]["nodeName"] == "node-b"]
    assert len(on_b) == 2
    stopped_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    removed = pod_netns_of_node(node.cgroup_root)
    installed.stop_kubelet("node-b")
    cgroups.kill_all(node.cgroup_root)
    installed.stop_containerd("node-b")
    assert len(removed) >= 2, f"node-b's pods hold no network namespace: {removed}"
    for name in removed:
        subprocess.run(["ip", "netns", "del", name], check=True)
    installed.start_containerd("node-b")
    start_kubelet_until_it_stays(installed, "node-b")
    rollout = installed.kubectl(
        "rollout", "status", "-n", INSTALL_NAMESPACE, "daemonset/whereabouts-daemon",
        "--timeout=120s",
    )  # fmt: skip
    assert rollout.returncode == 0

    def restarted() -> list[dict[str, Any]] | None:
        found = running_with_addresses(installed, namespace, "app=reboot", 4, 1)
        again = [p for p in found if p["metadata"]["uid"] in on_b]
        fresh = [
            p
            for p in again
            if p["status"]["containerStatuses"][0]["state"].get("running", {}).get("startedAt", "")
            > stopped_at
        ]
        return found if len(fresh) == 2 else None

    after = wait_until("node-b's pods back with new sandboxes", restarted, 120)
    addresses = [ip for pod in after for ip in net1_ips(pod)]
    assert len(set(addresses)) == 4, addresses
    for pod in after:
        shown = installed.kubectl(
            "exec", "-n", namespace, pod["metadata"]["name"], "--", "ip", "addr", "show", "net1"
        ).stdout
        assert f" {net1_ips(pod)[0]}/" in shown
    # The old sandboxes' addresses are gone (their DEL, with no netns left, still frees them).
    assert_holdings_settle(installed, namespace, expected_holdings(after, namespace), 90)
    assert_check_clean(installed)


def test_pods_get_addresses_while_a_node_daemon_pod_is_deleted_during_a_scale_up(
    installed: Cluster, namespace: str
) -> None:
    apply(installed, namespace, nad("churn", {"range": "10.66.0.0/24"}))
    apply(installed, namespace, deployment("churn", "churn", 2))
    running_with_addresses(installed, namespace, "app=churn", 2, 1)
    (daemon,) = [
        p
        for p in pods(installed, INSTALL_NAMESPACE, "app.kubernetes.io/name=whereabouts-daemon")
        if p["spec"]["nodeName"] == "node-a"
    ]
    scale(installed, namespace, "churn", 8)
    installed.kubectl(
        "delete", "pod", "-n", INSTALL_NAMESPACE, daemon["metadata"]["name"], "--wait=false"
    )
    after = running_with_addresses(installed, namespace, "app=churn", 8, 1)
    addresses = [ip for pod in after for ip in net1_ips(pod)]
    assert len(set(addresses)) == len(addresses) == 8, addresses
    assert {pod["spec"]["nodeName"] for pod in after} == {"node-a", "node-b"}
    assert_holdings_settle(installed, namespace, expected_holdings(after, namespace))
    rollout = installed.kubectl(
        "rollout", "status", "-n", INSTALL_NAMESPACE, "daemonset/whereabouts-daemon",
        "--timeout=120s",
    )  # fmt: skip
    assert rollout.returncode == 0
    replaced = [
        p
        for p in pods(installed, INSTALL_NAMESPACE, "app.kubernetes.io/name=whereabouts-daemon")
        if p["spec"]["nodeName"] == "node-a"
    ]
    assert [p["metadata"]["uid"] for p in replaced] != [daemon["metadata"]["uid"]]
    assert_check_clean(installed)


def test_the_cluster_demo_shows_addresses_a_cross_node_ping_and_host_locals_duplicate(
    installed: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """``demo --cluster`` on the session's nodes: it says what it showed, so it cannot rot."""
    assert show(installed) == 0
    shown = capsys.readouterr().out
    assert "8 addresses, all distinct" in shown
    assert shown.count("(node-b): reply") == 2
    assert "NO REPLY" not in shown
    assert "$ kubectl get ippools -n kube-system" in shown and "10.60.0.0/24" in shown
    assert "the same address on both nodes, on one segment: a duplicate" in shown
    assert "\n==> done" in shown
    assert installed.kubectl("get", "namespace", "demo", check=False).returncode != 0


def test_the_reconciler_replicas_ran_the_whole_module_without_a_restart(installed: Cluster) -> None:
    """Minutes after the install (this runs last), no reconciler container ever restarted.

    Without cluster DNS (here, and on some real clusters) a reconciler that
    dialled ``kubernetes.default.svc`` lost its watch and exited about every
    100 s; it must dial the Service address the kubelet gives it.
    """
    replicas = pods(installed, INSTALL_NAMESPACE, "app.kubernetes.io/name=whereabouts-reconciler")
    # node-b's replica was killed by the node restart above: node-a's ran all along.
    on_a = [p for p in replicas if p["spec"]["nodeName"] == "node-a"]
    assert on_a, [(p["metadata"]["name"], p["spec"]["nodeName"]) for p in replicas]
    for replica in on_a:
        started = datetime.strptime(replica["status"]["startTime"], "%Y-%m-%dT%H:%M:%SZ")
        age = (datetime.now(UTC) - started.replace(tzinfo=UTC)).total_seconds()
        assert age > 150, f"too early to tell: started {age:.0f}s ago"
        (container,) = replica["status"]["containerStatuses"]
        assert container["restartCount"] == 0, container
