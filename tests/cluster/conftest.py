"""A real two-node cluster, shared by the whole session.

``cluster`` is ``whereabouts-py-dev devcluster up --nodes 2`` done in-process
(its processes die with the test run if it is killed): later end-to-end tests
reuse it rather than paying for another start. Its teardown is ``down`` and
fails the session if anything could not be removed.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from whereabouts_py_dev.cluster import Cluster
from whereabouts_py_dev.cluster.images import LAB_TOOLS_IMAGE

# The README's test command runs as root: a missing privilege is a broken
# set-up, reported as a failure, never a skip.
if os.geteuid() != 0:  # pragma: no cover - the suite runs as root in CI
    raise RuntimeError("tests/cluster needs root: nodes run in namespaces and cgroups")

POD_TIMEOUT_S = 90.0


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two Ready nodes (node-a, node-b), kube-controller-manager and kube-scheduler."""
    started = Cluster.up(tmp_path_factory.mktemp("cluster"), 2, tied=True)
    try:
        yield started
    finally:
        started.down()


@pytest.fixture
def cluster_namespace(cluster: Cluster) -> str:
    """A fresh namespace, once the controller-manager has made its ``default`` ServiceAccount."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    wait_service_account(cluster, name)
    return name


def wait_service_account(cluster: Cluster, namespace: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cluster.kubectl("get", "serviceaccount", "-n", namespace, "default", check=False)
        if got.returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"no ServiceAccount default in {namespace} after {timeout_s:.0f}s")


def tools_pod(name: str, node: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A pod of the lab-tools image that sleeps on ``node`` (placed by the scheduler)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "tools",
                    "image": LAB_TOOLS_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "3600"],
                }
            ],
        },
    }


def run_pod(cluster: Cluster, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create the pod and return it once Running; fail with its events if it does not get there."""
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input_text=json.dumps(body))
    name = body["metadata"]["name"]
    deadline = time.monotonic() + POD_TIMEOUT_S
    pod: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pod = json.loads(cluster.kubectl("get", "pod", "-n", namespace, name, "-o", "json").stdout)
        if pod.get("status", {}).get("phase") == "Running":
            return pod
        time.sleep(0.5)
    described = cluster.kubectl("describe", "pod", "-n", namespace, name, check=False).stdout
    raise AssertionError(
        f"pod {namespace}/{name} not Running after {POD_TIMEOUT_S:.0f}s:\n{described}"
    )


def kubectl_exec(cluster: Cluster, namespace: str, pod: str, *command: str) -> str:
    return str(cluster.kubectl("exec", "-n", namespace, pod, "--", *command).stdout)


def node_dirs(directory: Path) -> list[Path]:
    return sorted((directory / "nodes").iterdir())
