"""``devcluster down`` removes everything ``up`` made, with pods still running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from whereabouts_py_dev.cli import main
from whereabouts_py_dev.cluster import Cluster, cgroups
from whereabouts_py_dev.cluster.lifecycle import (
    REGISTRY,
    STATE_FILE,
    host_mounts_under,
    remove_stale_clusters,
)
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


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


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
        # As a user does it: another process' view, from what is recorded in the directory.
        assert main(["devcluster", "down", "--dir", str(directory)]) == 0

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


CRASHING_CALLER = """
import os, signal, sys
from pathlib import Path
from whereabouts_py_dev.cluster import Cluster
from tests.cluster.conftest import run_pod, tools_pod, wait_service_account

cluster = Cluster.up(Path(sys.argv[1]), 1, tied=True)
cluster.kubectl("create", "namespace", "crash")
wait_service_account(cluster, "crash")
run_pod(cluster, "crash", tools_pod("tools", "node-a"))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_later_up_removes_what_a_killed_caller_left(tmp_path: Path) -> None:
    directory = tmp_path / "crashed"
    repository = Path(__file__).resolve().parents[2]
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_CALLER, str(directory)],
        cwd=repository,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    state = json.loads((directory / STATE_FILE).read_text())
    tag, [mount_ns] = state["tag"], list(state["mount_namespaces"].values())
    # The caller's processes get SIGKILL as it dies: let the kernel finish delivering it.
    holder = state["pids"]["node-a/holder"]
    deadline = time.monotonic() + 10
    while _alive(holder) and time.monotonic() < deadline:
        time.sleep(0.1)
    # The caller's processes died with it; the runtime's shims and the pod did not.
    survivors = [pid for pid in processes_in_mount_namespace(mount_ns) if _alive(pid)]
    assert survivors, "nothing survived the caller: the test would prove nothing"
    shim = next(pid for pid in survivors if "containerd-shim" in _command(pid))
    pod_netns = [
        line.split()[4].rsplit("/", 1)[-1]
        for line in Path(f"/proc/{shim}/mountinfo").read_text().splitlines()
        if line.split()[4].startswith("/run/netns/cni-")
    ]
    assert len(pod_netns) == 1
    assert any(name.startswith(f"wbc-{tag}-") for name in _netns())

    removed = remove_stale_clusters(min_age_s=0)

    assert f"cluster {tag} of {directory.resolve()}" in removed
    assert [pid for pid in processes_in_mount_namespace(mount_ns) if _alive(pid)] == []
    assert [name for name in _netns() if name.startswith(f"wbc-{tag}-")] == []
    assert set(pod_netns) & _netns() == set()
    assert [h for h in cgroups.hierarchies() if list(h.glob(f"wbc-{tag}-*"))] == []
    assert not (REGISTRY / tag).exists()
    assert host_mounts_under(directory) == []
