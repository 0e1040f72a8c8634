"""An ADD retry without pod identity is idempotent too.

Runtimes such as podman or nerdctl pass no K8S_POD_* in CNI_ARGS: the same
container and interface asking again get the same address, and no reservation
is left without its pool entry.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from whereabouts_py.cni.install import install_cni
from whereabouts_py_dev.controlplane import ControlPlane
from whereabouts_py_dev.nodes import SimulatedNodes
from whereabouts_py_dev.runtime import invoke


def network(ipam: dict[str, Any]) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "testnet", "type": "macvlan", "ipam": ipam}


def pools(plane: ControlPlane, namespace: str) -> dict[str, dict[str, Any]]:
    return plane.specs("ippools", namespace)


def reservations(plane: ControlPlane, namespace: str) -> dict[str, dict[str, Any]]:
    return plane.specs("overlappingrangeipreservations", namespace)


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_cni(tmp_path_factory.mktemp("cni-bin"))


@pytest.fixture
def node_a(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[SimulatedNodes]:
    with SimulatedNodes(control_plane, tmp_path / "nodes", ["node-a"], namespace) as nodes:
        yield nodes


def test_add_retry_without_pod_identity_returns_the_same_address_and_leaks_nothing(
    shim: Path, node_a: SimulatedNodes, control_plane: ControlPlane, namespace: str
) -> None:
    config = network({"type": "whereabouts", "range": "10.77.0.0/24"})
    env = node_a["node-a"].environment()

    def add() -> list[str]:
        outcome = invoke(
            shim,
            "ADD",
            config,
            container_id="podman-1",
            ifname="eth0",
            netns="/var/run/netns/podman-1",
            env=env,
        )
        assert outcome.ok, outcome.stdout
        return outcome.addresses()

    first = add()
    retry = add()  # the runtime did not get the first answer and asks again
    assert retry == first, f"retry got {retry}, first ADD got {first}"
    held = pools(control_plane, namespace)["10.77.0.0-24"]["allocations"]
    assert len(held) == 1, held
    # every reservation is backed by a pool entry
    assert set(reservations(control_plane, namespace)) == {"10.77.0.1"}
