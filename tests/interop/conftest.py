"""Ours and the Go plugin (whereabouts v0.9) side by side on the same pools.

Both run exactly as a container runtime runs them: one process per CNI call,
configuration on stdin, the pod in CNI_ARGS. The Go plugin is the real one,
built from its Go module (``whereabouts_py_dev.goplugin``); it reads the
flat file that the network configuration names in ``configuration_path``,
and so do our daemons (that flat file is the Go project's standard one).
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.reconciler.harness import Cluster
from whereabouts_py.cni.install import install_cni
from whereabouts_py.reconciler.collector import GarbageCollector, SweepReport
from whereabouts_py_dev.controlplane import ControlPlane
from whereabouts_py_dev.goplugin import (
    ensure_go_whereabouts,
    namespaced_kubeconfig,
    write_flat_file,
)
from whereabouts_py_dev.nodes import SimulatedNodes
from whereabouts_py_dev.runtime import Outcome, invoke, pod_args

NODES = ("node-a", "node-b")


@pytest.fixture(scope="session")
def go_plugin() -> Path:
    return ensure_go_whereabouts()


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_cni(tmp_path_factory.mktemp("cni-bin"))


@dataclass
class SideBySide:
    """One namespace, our daemons on two nodes, the Go plugin, one flat file."""

    plane: ControlPlane
    namespace: str
    shim: Path
    go_binary: Path
    nodes: SimulatedNodes
    flat_file: Path
    cluster: Cluster

    def network(self, ipam: Mapping[str, Any], name: str = "sidenet") -> dict[str, Any]:
        """A network configuration both plugins read; the flat file fills in the rest."""
        return {
            "cniVersion": "0.4.0",
            "name": name,
            "type": "macvlan",
            "ipam": {
                "type": "whereabouts",
                "configuration_path": str(self.flat_file),
                **ipam,
            },
        }

    def ours(
        self,
        command: str,
        config: Mapping[str, Any],
        pod: str,
        *,
        node: str = NODES[0],
        container: str | None = None,
    ) -> Outcome:
        return invoke(
            self.shim,
            command,
            dict(config),
            container_id=container or f"ctr-{pod}",
            ifname="net1",
            netns=f"/var/run/netns/{pod}",
            args=pod_args(self.namespace, pod),
            env=self.nodes[node].environment(),
        )

    def go(
        self,
        command: str,
        config: Mapping[str, Any],
        pod: str,
        *,
        container: str | None = None,
        **ipam: Any,
    ) -> Outcome:
        body = dict(config)
        if ipam:
            body["ipam"] = {**body["ipam"], **ipam}
        return invoke(
            self.go_binary,
            command,
            body,
            container_id=container or f"ctr-{pod}",
            ifname="net1",
            netns=f"/var/run/netns/{pod}",
            args=pod_args(self.namespace, pod),
            timeout_s=50.0,
        )

    # --- what the API holds ------------------------------------------------------------------
    def pools(self) -> dict[str, dict[str, Any]]:
        return self.plane.specs("ippools", self.namespace)

    def reservations(self) -> dict[str, dict[str, Any]]:
        return self.plane.specs("overlappingrangeipreservations", self.namespace)

    def entries(self, cidr: str) -> dict[str, list[tuple[str, str]]]:
        """Every pool entry of the range, by address: [(IPPool, podref), ...]."""
        whole = ipaddress.ip_network(cidr)
        found: dict[str, list[tuple[str, str]]] = {}
        for name, spec in self.pools().items():
            block = ipaddress.ip_network(spec["range"])
            if not block.subnet_of(whole):  # type: ignore[arg-type]
                continue
            for key, holder in (spec.get("allocations") or {}).items():
                address = str(block.network_address + int(key))
                found.setdefault(address, []).append((name, holder["podref"]))
        return found

    def holders(self, cidr: str) -> dict[str, set[str]]:
        """Address -> the pods that pool entries give it to (more than one: a duplicate)."""
        return {
            address: {podref for _, podref in places}
            for address, places in self.entries(cidr).items()
        }

    def sweep(self) -> SweepReport:
        """One pass of our reconciler (no grace period), in this process."""
        return GarbageCollector(self.cluster.store, grace_period_s=0.0).sweep()

    def check(self) -> tuple[int, str]:
        return self.plugin("check")

    def plugin(self, *command: str) -> tuple[int, str]:
        """``kubectl whereabouts -o json COMMAND``: exit status and stdout."""
        from whereabouts_py.kubectl.plugin import main

        return _run_plugin(main, self.plane, self.namespace, list(command))

    def create_pods(self, names: list[str]) -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(self.cluster.create_pod, names))

    def delete_pods(self, names: list[str]) -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(self.cluster.delete_pod, names))


def _run_plugin(
    main: Any, plane: ControlPlane, namespace: str, command: list[str]
) -> tuple[int, str]:
    import contextlib
    import io

    arguments = ["--kubeconfig", str(plane.kubeconfig), "-n", namespace, "-o", "json", *command]
    for _ in range(20):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(arguments)
        if code == 0 or out.getvalue().strip():
            return int(code), out.getvalue()
        # A fresh apiserver answers 429 while a resource's watch cache starts.
        if "answered 429" not in err.getvalue():
            break
        time.sleep(0.5)
    raise AssertionError(f"kubectl whereabouts {command} failed: {err.getvalue()}")


@pytest.fixture
def side(
    control_plane: ControlPlane, go_plugin: Path, shim: Path, tmp_path: Path
) -> Iterator[SideBySide]:
    namespace = f"i-{uuid.uuid4().hex[:10]}"
    control_plane.kubectl("create", "namespace", namespace)
    kubeconfig = namespaced_kubeconfig(
        control_plane.kubeconfig, namespace, tmp_path / "go" / "kubeconfig"
    )
    flat_file = write_flat_file(tmp_path / "go" / "whereabouts.d", kubeconfig)
    with SimulatedNodes(control_plane, tmp_path / "nodes", list(NODES), namespace) as nodes:
        yield SideBySide(
            control_plane,
            namespace,
            shim,
            go_plugin,
            nodes,
            flat_file,
            Cluster(control_plane, namespace),
        )
