"""whereabouts-py as its users meet it: the real Multus, two nodes, one segment, a router.

Multus (the pinned thin plugin) runs in each node's netns as the runtime
would, reads the pod and its NetworkAttachmentDefinitions from the API,
delegates eth0 to ptp + host-local and net1 to the NAD's main plugin, which
runs our shim as IPAM against that node's daemon. The NADs are the files in
``manifests/examples``.
"""

from __future__ import annotations

import ipaddress
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from whereabouts_py_dev.controlplane import ControlPlane, spawn_tied
from whereabouts_py_dev.lab import Lab, LabPod
from whereabouts_py_dev.netns import ip, kernel_lacks

from .helpers import allocations, explain, gateway_of, reservations

pytestmark = [pytest.mark.kube, pytest.mark.netns]

NODES = ("node-a", "node-b")


def attach(lab: Lab, namespace: str, names: Sequence[str], networks: list[Any]) -> list[LabPod]:
    """Create pods spread over both nodes and run Multus ADD for each; all must succeed."""
    pods = []
    for index, name in enumerate(names):
        pod = lab.create_pod(namespace, name, NODES[index % len(NODES)], networks)
        added = lab.add(pod)
        assert added.ok, explain(lab, pod, added)
        pods.append(pod)
    return pods


def bare(addresses: Sequence[str]) -> list[str]:
    return [address.split("/")[0] for address in addresses]


def in_range(address: str, cidr: str) -> bool:
    return ipaddress.ip_address(address.split("/", maxsplit=1)[0]) in ipaddress.ip_network(cidr)


def secondary_status(lab: Lab, pod: LabPod, network: str) -> dict[str, Any]:
    """The network-status entry Multus wrote for ``network`` (namespace/name)."""
    status = lab.network_status(pod)
    [entry] = [item for item in status if item["name"] == network]
    [default] = [item for item in status if item.get("default")]
    assert default["interface"] == "eth0"
    assert bare(lab.pod_addresses(pod, "eth0")) == default["ips"]
    return entry


def test_macvlan_dual_stack_pods_on_two_nodes_share_one_pool(
    lab: Lab, control_plane: ControlPlane, namespace: str, examples: dict[str, dict[str, Any]]
) -> None:
    ranges = [item["range"] for item in examples["macvlan-dual-stack"]["ipam"]["ipRanges"]]
    for cidr in ranges:
        lab.add_router_address(gateway_of(cidr))
    pods = attach(lab, namespace, [f"web-{i}" for i in range(4)], [{"name": "macvlan-dual-stack"}])

    # Each pod: one address from each range on net1, nobody's address twice.
    held = {pod.name: lab.pod_addresses(pod) for pod in pods}
    for pod in pods:
        v4, v6 = held[pod.name]
        assert in_range(v4, ranges[0]) and in_range(v6, ranges[1]), held
    every = [address for addresses in held.values() for address in addresses]
    assert len(set(every)) == 8, held

    # Multus recorded our addresses in the pod's network-status.
    for pod in pods:
        entry = secondary_status(lab, pod, f"{namespace}/macvlan-dual-stack")
        assert entry["interface"] == "net1"
        assert entry["ips"] == bare(held[pod.name])

    # The IPPools say who holds what, on which node.
    entries = allocations(control_plane, namespace)
    for pod in pods:
        for address in bare(held[pod.name]):
            assert entries[address]["podref"] == pod.ref
            assert entries[address]["ifname"] == "net1"
            assert entries[address]["node"] == pod.node
            assert entries[address]["id"] == pod.sandbox
    assert len(entries) == 8

    # Every pod reaches the router and a pod on the other node, over net1, v4 and v6.
    for pod in pods:
        lab.wait_addresses_usable(pod)
    for index, pod in enumerate(pods):
        peer = pods[(index + 1) % len(pods)]
        assert peer.node != pod.node
        for target in [*bare(gateway_of(cidr) for cidr in ranges), *bare(held[peer.name])]:
            assert lab.ping_from(pod, target), f"{pod.ref} on {pod.node} cannot reach {target}"

    # Multus DEL goes through our shim: net1 gone, the pool entries and reservations too.
    for pod in pods:
        deleted = lab.delete(pod)
        assert deleted.ok, explain(lab, pod, deleted)
        assert lab.pod_addresses(pod) == []
    assert allocations(control_plane, namespace) == {}
    assert reservations(control_plane, namespace) == {}


def test_bridge_pods_on_two_nodes_reach_the_router_and_each_other(
    lab: Lab, control_plane: ControlPlane, namespace: str, examples: dict[str, dict[str, Any]]
) -> None:
    ipam = examples["bridge-net"]["ipam"]
    lab.add_router_address(gateway_of(ipam["range"]))
    assert gateway_of(ipam["range"]).startswith(ipam["gateway"] + "/")
    pods = attach(lab, namespace, [f"app-{i}" for i in range(4)], [{"name": "bridge-net"}])

    held = {pod.name: lab.pod_addresses(pod) for pod in pods}
    addresses = [address for [address] in held.values()]
    assert len(set(addresses)) == 4, held
    assert all(in_range(address, ipam["range"]) for address in addresses), held
    assert ipam["gateway"] not in bare(addresses), "the router's address was handed out"
    for pod in pods:
        assert secondary_status(lab, pod, f"{namespace}/bridge-net")["ips"] == bare(held[pod.name])
        # net1's host side is a port of the node's br0, next to its NIC on the segment.
        ports = json.loads(
            ip("-j", "-n", lab.nodes[pod.node].netns, "link", "show", "master", "br0")
        )
        assert "eth2" in [port["ifname"] for port in ports]
    assert {entry["node"] for entry in allocations(control_plane, namespace).values()} == set(NODES)

    for index, pod in enumerate(pods):
        peer = pods[(index + 1) % len(pods)]
        for target in (ipam["gateway"], *bare(held[peer.name])):
            assert lab.ping_from(pod, target), f"{pod.ref} on {pod.node} cannot reach {target}"

    for pod in pods:
        assert lab.delete(pod).ok
    assert allocations(control_plane, namespace) == {}


def apply_nad(plane: ControlPlane, namespace: str, config: dict[str, Any]) -> str:
    """Create a NetworkAttachmentDefinition holding ``config``; return its name."""
    nad = {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": config["name"], "namespace": namespace},
        "spec": {"config": json.dumps(config)},
    }
    plane.kubectl("apply", "-f", "-", input_text=json.dumps(nad))
    return str(config["name"])


@pytest.mark.parametrize("main_plugin", ["ipvlan", "macvlan"])
def test_conflist_with_sbr_gives_each_pod_its_source_route(
    main_plugin: str,
    lab: Lab,
    control_plane: ControlPlane,
    namespace: str,
    examples: dict[str, dict[str, Any]],
) -> None:
    """The ipvlan + sbr example; with macvlan in ipvlan's place, the chain also runs here.

    The macvlan variant is the same conflist with only the main plugin swapped,
    so that Multus' conflist path and sbr are exercised on kernels built without
    ipvlan; the ipvlan case itself is skipped there, with the kernel's reason.
    """
    conflist = examples["ipvlan-sbr"]
    assert [plugin["type"] for plugin in conflist["plugins"]] == ["ipvlan", "sbr"]
    if main_plugin == "ipvlan":
        reason = kernel_lacks("ipvlan")
        if reason is not None:
            pytest.skip(reason)
        network = "ipvlan-sbr"
    else:
        main = {**conflist["plugins"][0], "type": "macvlan", "mode": "bridge"}
        network = apply_nad(
            control_plane,
            namespace,
            {**conflist, "name": "macvlan-sbr", "plugins": [main, *conflist["plugins"][1:]]},
        )
    ipam = conflist["plugins"][0]["ipam"]
    lab.add_router_address(gateway_of(ipam["range"]))
    pods = attach(lab, namespace, ["sbr-0", "sbr-1"], [{"name": network}])

    [first], [second] = (lab.pod_addresses(pod) for pod in pods)
    assert first != second, (first, second)
    assert in_range(first, ipam["range"]) and in_range(second, ipam["range"])
    addresses = bare([first, second])
    for pod, address, peer in zip(pods, addresses, reversed(addresses), strict=True):
        assert secondary_status(lab, pod, f"{namespace}/{network}")["ips"] == [address]
        # sbr: a rule "from <address> lookup <table>", and that table routes via the gateway.
        rules = json.loads(ip("-j", "-n", pod.netns, "rule", "show"))
        [rule] = [rule for rule in rules if rule.get("src") == address]
        routes = json.loads(ip("-j", "-n", pod.netns, "route", "show", "table", str(rule["table"])))
        [default] = [route for route in routes if route["dst"] == "default"]
        assert (default["gateway"], default["dev"]) == (ipam["gateway"], "net1"), routes
        # sbr moved net1's routes out of the main table: traffic from the pod's
        # net1 address leaves by net1 (to the router, a pod on the other node);
        # traffic from no particular address follows the main table (eth0).
        for target in (ipam["gateway"], peer):
            assert lab.ping_from(pod, target, source=address), f"{pod.ref} -> {target}"
        main_table = json.loads(ip("-j", "-n", pod.netns, "route", "show", "table", "main"))
        assert [route for route in main_table if route.get("dev") == "net1"] == [], main_table
    for pod in pods:
        assert lab.delete(pod).ok
    assert allocations(control_plane, namespace) == {}


def test_host_local_hands_out_the_same_address_on_both_nodes(
    lab: Lab, control_plane: ControlPlane, namespace: str, examples: dict[str, dict[str, Any]]
) -> None:
    """The conflict whereabouts-py exists to prevent: host-local knows only its own node."""
    config = examples["macvlan-dual-stack"]
    v4 = config["ipam"]["ipRanges"][0]
    host_local = {
        **config,
        "name": "macvlan-host-local",
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": v4["range"], "rangeStart": v4["range_start"]}]],
        },
    }
    apply_nad(control_plane, namespace, host_local)
    on_a, on_b = attach(lab, namespace, ["local-0", "local-1"], [{"name": "macvlan-host-local"}])
    assert on_a.node != on_b.node

    [address_a] = lab.pod_addresses(on_a)
    [address_b] = lab.pod_addresses(on_b)
    # Both nodes' host-local start from range_start: one address, two pods, one segment.
    assert address_a == address_b == f"{v4['range_start']}/24"
    assert secondary_status(lab, on_a, f"{namespace}/macvlan-host-local")["ips"] == bare(
        [address_b]
    )
    assert allocations(control_plane, namespace) == {}  # no cluster-wide record at all
    for pod in (on_a, on_b):
        assert lab.delete(pod).ok


def test_fixed_address_from_the_annotation_and_a_refused_duplicate(
    lab: Lab, control_plane: ControlPlane, namespace: str, examples: dict[str, dict[str, Any]]
) -> None:
    ipam = examples["bridge-net"]["ipam"]
    assert examples["bridge-net"]["capabilities"] == {"ips": True}
    wanted = str(ipaddress.ip_network(ipam["range"]).network_address + 50)
    request = [{"name": "bridge-net", "ips": [f"{wanted}/24"]}]
    [first] = attach(lab, namespace, ["fixed-0"], request)
    assert lab.pod_addresses(first) == [f"{wanted}/24"]
    assert secondary_status(lab, first, f"{namespace}/bridge-net")["ips"] == [wanted]
    assert allocations(control_plane, namespace)[wanted]["podref"] == first.ref

    # The same address for a pod on the other node: refused, and Multus says why.
    second = lab.create_pod(namespace, "fixed-1", "node-b", request)
    refused = lab.add(second)
    assert not refused.ok, explain(lab, second, refused)
    assert refused.output is not None, refused.stdout
    message = refused.output["msg"]
    assert wanted in message, message
    assert re.search(r"already (allocated|reserved|held)", message), message
    assert first.ref in message, message  # who holds it
    assert "bridge-net" in message, message  # Multus names the network that failed
    # Multus rolled the sandbox back (eth0 too) and the pool still has one holder.
    assert lab.pod_addresses(second, "eth0") == [] and lab.pod_addresses(second) == []
    assert {
        address: entry["podref"] for address, entry in allocations(control_plane, namespace).items()
    } == {wanted: first.ref}

    # Once the first pod is gone, the address is free for the second.
    assert lab.delete(first).ok
    retried = lab.add(second)
    assert retried.ok, explain(lab, second, retried)
    assert lab.pod_addresses(second) == [f"{wanted}/24"]
    assert lab.delete(second).ok


@contextmanager
def reconciler(plane: ControlPlane, namespace: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``whereabouts-py reconciler`` as a process: fast sweeps, a short grace period."""
    command = [
        sys.executable,
        "-m",
        "whereabouts_py",
        "reconciler",
        "--kubeconfig",
        str(plane.kubeconfig),
        "--namespace",
        namespace,
        "--sweep-interval",
        "1",
        "--grace-period",
        "1",
    ]
    process = spawn_tied(command, log)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def test_reconciler_frees_a_pod_deleted_without_del_and_keeps_live_ones(
    lab: Lab,
    control_plane: ControlPlane,
    namespace: str,
    examples: dict[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    live, lost = attach(lab, namespace, ["live-0", "lost-1"], [{"name": "macvlan-dual-stack"}])
    live_addresses = bare(lab.pod_addresses(live))
    lost_addresses = bare(lab.pod_addresses(lost))
    log = tmp_path / "reconciler.log"
    with reconciler(control_plane, namespace, log) as process:
        # node-b dies with its pod: the Pod object goes, no CNI DEL ever runs.
        lab.delete_pod_object(lost)
        deadline = time.monotonic() + 20
        while set(lost_addresses) & set(allocations(control_plane, namespace)):
            assert process.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, (
                f"{lost.ref}'s addresses {lost_addresses} still allocated after 20 s:\n"
                + log.read_text(errors="replace")[-3000:]
            )
            time.sleep(0.2)
        # Several sweeps later the live pod, whose network-status Multus wrote, keeps both.
        time.sleep(3)
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
    entries = allocations(control_plane, namespace)
    assert {address: entries[address]["podref"] for address in entries} == {
        address: live.ref for address in live_addresses
    }
    assert set(reservations(control_plane, namespace)) == {
        address.replace(":", "-") for address in live_addresses
    }
    assert lab.delete(live).ok
