"""``devcluster down`` removes everything ``up`` made, with pods still running."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from whereabouts_py_dev.cluster import Cluster, cgroups
from whereabouts_py_dev.cluster.lifecycle import host_mounts_under
from whereabouts_py_dev.cluster.node import processes_in_mount_namespace

from .conftest import run_pod, tools_pod, wait_service_account

pytestmark = [pytest.mark.kube, pytest.mark.netns]


def _netns() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split(" ", 1)[0] for line in listed.stdout.splitlines() if line.strip()}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_down_leaves_nothing_behind(tmp_path: Path) -> None:
    directory = tmp_path / "cluster"
    cluster = Cluster.up(directory, 1, tied=True)
    try:
        cluster.kubectl("create", "namespace", "down")
        wait_service_account(cluster, "down")
        run_pod(cluster, "down", tools_pod("tools", "node-a"))
        node = cluster.nodes[0]
        # What there is to remove, with a pod running: processes, the pod's netns,
        # the kubelet's cgroups, mounts inside the node.
        pids = dict(cluster.pids) | dict(cluster.plane.pids)
        mount_ns = cluster.mount_namespaces[node.name]
        in_node = processes_in_mount_namespace(mount_ns)
        holder = cluster.pids[f"{node.name}/holder"]
        pod_netns = node.pod_netns_mounts(holder)
        cluster_netns = set(cluster.topology.all_netns())
        node_mounts = [
            line.split()[4]
            for line in Path(f"/proc/{holder}/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(("/var/lib/kubelet/", "/run/containerd/"))
        ]
        kubepods = [h / node.cgroup_root.lstrip("/") / "kubepods" for h in cgroups.hierarchies()]
        kubepods = [path for path in kubepods if path.is_dir()]
    finally:
        cluster.down()

    assert len(in_node) >= 4, in_node  # holder, containerd, kubelet, a shim at least
    assert len(pod_netns) == 1, pod_netns
    assert node_mounts, "the node had no kubelet or containerd mounts to remove"
    assert kubepods, "the kubelet made no kubepods cgroup"
    assert cluster_netns

    assert [key for key, pid in pids.items() if _alive(pid)] == []
    assert [pid for pid in processes_in_mount_namespace(mount_ns) if _alive(pid)] == []
    assert (cluster_netns | set(pod_netns)) & _netns() == set()
    assert not os.path.exists(f"/run/netns/{pod_netns[0]}")
    assert [path for path in kubepods if path.exists()] == []
    assert [h for h in cgroups.hierarchies() if (h / node.cgroup_root.lstrip("/")).exists()] == []
    assert host_mounts_under(directory) == []
    assert not directory.exists()
    # Nothing of it in the host's iptables (whatever the kubelet adds lives in the node netns).
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    assert node.pod_cidr not in rules and node.ip not in rules
