"""Real nodes: kubelets Ready, pods Running on each with an eth0 from the node's pod CIDR."""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from whereabouts_py_dev.binaries import KUBERNETES_VERSION
from whereabouts_py_dev.cluster import Cluster, import_image
from whereabouts_py_dev.cluster.images import ImageError
from whereabouts_py_dev.netns import inside_netns

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


def test_a_pod_reaches_the_apiserver_in_cluster_with_its_service_account_token(
    cluster: Cluster, cluster_namespace: str
) -> None:
    """From the pod's netns, the ``kubernetes`` Service answers with the projected CA and token.

    busybox's TLS cannot talk to the apiserver, so the request is made from
    this test, on a socket created inside the pod's network namespace, with
    what the kubelet mounted into the pod.
    """
    pod = run_pod(cluster, cluster_namespace, tools_pod("in-cluster", "node-b"))
    secrets = "/var/run/secrets/kubernetes.io/serviceaccount"
    token = kubectl_exec(cluster, cluster_namespace, "in-cluster", "cat", f"{secrets}/token")
    ca = kubectl_exec(cluster, cluster_namespace, "in-cluster", "cat", f"{secrets}/ca.crt")
    env = kubectl_exec(cluster, cluster_namespace, "in-cluster", "env")
    service = dict(line.split("=", 1) for line in env.splitlines() if "=" in line)
    host, port = service["KUBERNETES_SERVICE_HOST"], int(service["KUBERNETES_SERVICE_PORT"])

    with inside_netns(pod_netns(pod["status"]["podIP"])):
        raw = socket.create_connection((host, port), timeout=10)
    context = ssl.create_default_context(cadata=ca)
    body = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    request = (
        "POST /apis/authentication.k8s.io/v1/selfsubjectreviews HTTP/1.1\r\n"
        "Host: kubernetes.default.svc\r\nConnection: close\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )
    with context.wrap_socket(raw, server_hostname="kubernetes.default.svc") as tls:
        tls.sendall(request.encode())
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    head, _, payload = answer.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 201"), head
    user = json.loads(payload)["status"]["userInfo"]["username"]
    assert user == f"system:serviceaccount:{cluster_namespace}:default"


def pod_netns(pod_ip: str) -> str:
    """The ``cni-*`` network namespace whose eth0 holds ``pod_ip``."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    for name in (line.split(" ", 1)[0] for line in listed.stdout.splitlines()):
        if not name.startswith("cni-"):
            continue
        shown = subprocess.run(
            ["ip", "-n", name, "-4", "-o", "addr", "show", "dev", "eth0"],
            capture_output=True,
            text=True,
            check=False,
        )
        if f" {pod_ip}/" in shown.stdout:
            return name
    raise AssertionError(f"no pod network namespace holds {pod_ip}")


def test_a_node_restarts_its_kubelet_and_containerd_and_keeps_its_pod(
    cluster: Cluster, cluster_namespace: str
) -> None:
    pod = run_pod(cluster, cluster_namespace, tools_pod("survivor", "node-b"))
    cluster.stop_kubelet("node-b")
    cluster.stop_containerd("node-b")
    assert "node-b/kubelet" not in cluster.pids and "node-b/containerd" not in cluster.pids
    cluster.start_containerd("node-b")
    cluster.start_kubelet("node-b")
    cluster.wait_ready(timeout_s=60)
    # The same sandbox is still there: same address, no restart, still answering exec.
    again = run_pod(cluster, cluster_namespace, tools_pod("survivor", "node-b"))
    assert again["status"]["podIP"] == pod["status"]["podIP"]
    assert again["metadata"]["uid"] == pod["metadata"]["uid"]
    assert again["status"]["containerStatuses"][0]["restartCount"] == 0
    # The restarted kubelet serves exec once it has synced its pods again.
    deadline = time.monotonic() + 30
    answered = cluster.kubectl(
        "exec", "-n", cluster_namespace, "survivor", "--", "hostname", check=False
    )
    while answered.returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
        answered = cluster.kubectl(
            "exec", "-n", cluster_namespace, "survivor", "--", "hostname", check=False
        )
    assert answered.stdout.strip() == "survivor", answered.stderr


def test_multus_adds_a_secondary_network_from_the_pod_annotation(
    cluster: Cluster, cluster_namespace: str
) -> None:
    """A macvlan NAD on every node's eth1: Multus reads it with the node's identity."""
    nad = {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "segment"},
        "spec": {
            "config": json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "type": "macvlan",
                    "master": "eth1",
                    "mode": "bridge",
                    "ipam": {"type": "static", "addresses": [{"address": "10.58.0.21/24"}]},
                }
            )
        },
    }
    cluster.kubectl("apply", "-n", cluster_namespace, "-f", "-", input_text=json.dumps(nad))
    cluster.add_router_address("10.58.0.1/24")
    annotations = {"k8s.v1.cni.cncf.io/networks": "segment"}
    pod = run_pod(cluster, cluster_namespace, tools_pod("attached", "node-a", annotations))
    status = json.loads(pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"])
    assert [(s["interface"], s["ips"]) for s in status] == [
        ("eth0", [pod["status"]["podIP"]]),
        ("net1", ["10.58.0.21"]),
    ]
    # net1 is on the segment: the router answers over it.
    answered = kubectl_exec(
        cluster,
        cluster_namespace,
        "attached",
        "ping",
        "-c",
        "1",
        "-W",
        "3",
        "-I",
        "net1",
        "10.58.0.1",
    )
    assert "1 packets received" in answered


def test_host_to_container_propagation_from_a_node_path_is_accepted(
    cluster: Cluster, cluster_namespace: str
) -> None:
    """As on a systemd host, a node's mounts are shared: the runtime accepts HostToContainer.

    Our DaemonSet mounts /var/run/netns that way; on a private "/" containerd
    refuses the container ("... is not a shared or slave mount").
    """
    body = tools_pod("propagation", "node-a")
    body["spec"]["volumes"] = [{"name": "netns", "hostPath": {"path": "/var/run/netns"}}]
    body["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "netns", "mountPath": "/netns", "mountPropagation": "HostToContainer"}
    ]
    pod = run_pod(cluster, cluster_namespace, body)
    # The node's /var/run/netns, with the pod's own sandbox netns in it.
    listed = kubectl_exec(cluster, cluster_namespace, "propagation", "ls", "/netns")
    assert pod_netns(pod["status"]["podIP"]) in listed.split()


def test_importing_a_broken_archive_names_the_node_and_what_ctr_said(
    cluster: Cluster, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"not a tar archive")
    with pytest.raises(ImageError) as failed:
        import_image(broken, cluster.nodes)
    message = str(failed.value)
    assert "node node-a's containerd" in message and "node node-b's containerd" in message
    assert str(broken) in message
