"""Harness for reconciler tests: real reconciler processes, real Pods, real pools.

Reconcilers run as ``python -m whereabouts_py reconciler`` subprocesses with
the control plane's admin kubeconfig, tied to the test run (they get SIGKILL
if pytest dies) and stopped in ``finally``. Pods are real Pod objects with
``spec.nodeName`` set (there is no scheduler or kubelet; they are deleted with
grace period 0); phases and conditions are set through the status
subresource. Pools and reservations are written through the store, in the Go
project's format, where that is simpler than running daemons.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import netaddr
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from whereabouts_py.core.allocator import Allocation
from whereabouts_py.core.codec import pool_name, reservation_name
from whereabouts_py.errors import ConflictError
from whereabouts_py.store.kube import KubeStore, PoolSnapshot, connect
from whereabouts_py_dev.controlplane import ControlPlane, free_port, spawn_tied

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
READY_TIMEOUT_S = 60.0


# --- reconciler processes -------------------------------------------------------------------


@dataclass
class Reconciler:
    """One reconciler subprocess and its log."""

    identity: str
    process: subprocess.Popen[bytes]
    log: Path
    metrics_port: int

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def count(self, needle: str) -> int:
        return self.text().count(needle)

    def wait_for(self, needle: str, timeout_s: float = READY_TIMEOUT_S, count: int = 1) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.count(needle) >= count:
                return
            if self.process.poll() is not None:
                raise AssertionError(
                    f"reconciler {self.identity} exited ({self.process.returncode}):\n"
                    f"{self.text()[-3000:]}"
                )
            time.sleep(0.05)
        raise AssertionError(
            f"reconciler {self.identity}: no {needle!r} (x{count}) within {timeout_s:.0f}s:\n"
            f"{self.text()[-3000:]}"
        )

    def wait_ready(self) -> None:
        """Leading, its pod watch running and its first sweep done."""
        self.wait_for("became leader")
        self.wait_for("pod watch established")
        self.wait_for("sweep finished")

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics, keyed ``name{label="value",...}``."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}"] = sample.value
        return samples

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=5)


def start_reconciler(
    plane: ControlPlane,
    namespace: str,
    directory: Path,
    identity: str,
    *,
    sweep_interval_s: float = 300.0,
    lease_duration_s: float = 5.0,
    grace_period_s: float = 60.0,
    kubeconfig: Path | None = None,
    extra_args: Sequence[str] = (),
) -> Reconciler:
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / f"reconciler-{identity}-{uuid.uuid4().hex[:6]}.log"
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "whereabouts_py",
        "reconciler",
        "--kubeconfig",
        str(kubeconfig or plane.kubeconfig),
        "--namespace",
        namespace,
        "--identity",
        identity,
        "--metrics-address",
        f"127.0.0.1:{port}",
        "--sweep-interval",
        str(sweep_interval_s),
        "--lease-duration",
        str(lease_duration_s),
        "--grace-period",
        str(grace_period_s),
        *extra_args,
    ]
    return Reconciler(identity, spawn_tied(command, log_path), log_path, port)


@contextlib.contextmanager
def running_reconciler(
    plane: ControlPlane, namespace: str, directory: Path, identity: str = "rec-a", **flags: Any
) -> Iterator[Reconciler]:
    reconciler = start_reconciler(plane, namespace, directory, identity, **flags)
    try:
        reconciler.wait_ready()
        yield reconciler
    finally:
        reconciler.stop()


# --- the cluster as the tests see it ----------------------------------------------------------


class Cluster:
    """Pods through the kubernetes client; pools and reservations through our store."""

    def __init__(self, plane: ControlPlane, namespace: str) -> None:
        api_client = connect(str(plane.kubeconfig))
        self.plane = plane
        self.namespace = namespace
        self.core = client.CoreV1Api(api_client)
        self.store = KubeStore(api_client, namespace)

    # pods
    def create_pod(
        self, name: str, *, network_status: list[dict[str, Any]] | None = None, node: str = "node-a"
    ) -> str:
        """Create a Pod bound to ``node``; return its UID."""
        metadata: dict[str, Any] = {"name": name}
        if network_status is not None:
            metadata["annotations"] = {
                "k8s.v1.cni.cncf.io/network-status": json.dumps(network_status)
            }
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": PAUSE_IMAGE}]},
        }
        created = self.core.create_namespaced_pod(self.namespace, body)
        return str(created.metadata.uid)

    def delete_pod(self, name: str) -> None:
        self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)
        deadline = time.monotonic() + 10
        while self.store.get_pod(self.namespace, name) is not None:
            assert time.monotonic() < deadline, f"pod {name} was not deleted"
            time.sleep(0.02)

    def set_pod_status(self, name: str, status: Mapping[str, Any]) -> None:
        self.core.patch_namespaced_pod_status(name, self.namespace, {"status": dict(status)})

    def podref(self, name: str) -> str:
        return f"{self.namespace}/{name}"

    def holder(self, pod: str, uid: str, ifname: str = "net1") -> Allocation:
        return Allocation(f"ctr-{pod}", self.podref(pod), ifname, node="node-a", pod_uid=uid)

    # pools and reservations, in the Go project's format
    def put_entries(
        self,
        cidr: str,
        entries: Mapping[int, Allocation],
        *,
        network_name: str | None = None,
        reserve: bool = True,
    ) -> str:
        """Add entries to a pool (creating it) and, unless told not to, their reservations."""
        name = pool_name(cidr, network_name)
        for _ in range(10):
            snapshot = self.store.get_pool(name, cidr)
            try:
                self.store.write_pool(snapshot, {**snapshot.allocations, **entries})
                break
            except ConflictError:  # a reconciler wrote meanwhile: read again
                time.sleep(0.05)
        network = netaddr.IPNetwork(cidr)
        for offset, holder in entries.items() if reserve else ():
            address = netaddr.IPAddress(int(network.network) + offset, network.version)
            self.store.create_reservation(reservation_name(address, network_name), holder)
        return name

    def pool(self, cidr: str, network_name: str | None = None) -> PoolSnapshot:
        return self.store.get_pool(pool_name(cidr, network_name), cidr)

    def reservations(self) -> dict[str, Allocation]:
        return {r.name: r.holder for r in self.store.list_reservations()}

    def events(self, reason: str) -> list[Any]:
        listed = self.core.list_namespaced_event(self.namespace)
        return [event for event in listed.items if event.reason == reason]


def wait_until(
    condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.05
) -> float:
    """Poll until ``condition()``; return the seconds it took."""
    started = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - started
        if elapsed > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s:.0f}s")
        time.sleep(poll_s)
    return time.monotonic() - started


def new_namespace(plane: ControlPlane) -> str:
    name = f"r-{uuid.uuid4().hex[:10]}"
    plane.kubectl("create", "namespace", name)
    return name
