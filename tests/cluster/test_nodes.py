"""Real nodes: kubelets Ready, pods Running on each with an eth0 from the node's pod CIDR."""

from __future__ import annotations

import ipaddress
import json

import pytest

from whereabouts_py_dev.binaries import KUBERNETES_VERSION
from whereabouts_py_dev.cluster import Cluster

from .conftest import kubectl_exec, run_pod, tools_pod

pytestmark = [pytest.mark.kube, pytest.mark.netns]


def test_both_nodes_are_ready_with_their_segment_address(cluster: Cluster) -> None:
    listed = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    nodes = {item["metadata"]["name"]: item for item in listed}
    assert sorted(nodes) == ["node-a", "node-b"]
    for node in cluster.nodes:
        item = nodes[node.name]
        ready = [c for c in item["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True", ready
        addresses = {a["type"]: a["address"] for a in item["status"]["addresses"]}
        assert addresses["InternalIP"] == node.ip
        info = item["status"]["nodeInfo"]
        assert info["kubeletVersion"] == KUBERNETES_VERSION
        assert info["containerRuntimeVersion"].startswith("containerd://")


def test_a_pod_on_each_node_runs_with_an_address_from_its_node_cidr(
    cluster: Cluster, cluster_namespace: str
) -> None:
    addresses = {}
    for node in cluster.nodes:
        pod = run_pod(cluster, cluster_namespace, tools_pod(f"tools-{node.name}", node.name))
        assert pod["spec"]["nodeName"] == node.name
        pod_ip = pod["status"]["podIP"]
        assert ipaddress.ip_address(pod_ip) in ipaddress.ip_network(node.pod_cidr)
        # The address is really on the pod's eth0, put there by Multus' default delegate.
        shown = kubectl_exec(
            cluster, cluster_namespace, pod["metadata"]["name"], "ip", "-4", "addr", "show", "eth0"
        )
        assert f"inet {pod_ip}/" in shown
        status = json.loads(pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"])
        assert status[0]["interface"] == "eth0" and status[0]["ips"] == [pod_ip]
        addresses[node.name] = pod_ip
    assert len(set(addresses.values())) == len(cluster.nodes)
    # Pods reach each other across nodes over the segment.
    answered = kubectl_exec(
        cluster,
        cluster_namespace,
        "tools-node-a",
        "ping",
        "-c",
        "1",
        "-W",
        "3",
        addresses["node-b"],
    )
    assert "1 packets received" in answered
