"""Real network namespaces and Debian's reference CNI plugins running our shim as IPAM.

Topology per test (nothing touches the root network namespace):

* a "node" netns holding a veth pair ``eth1``/``eth1peer`` (``eth1`` is the
  macvlan/ipvlan master); the main plugin runs inside it, so bridge and ptp
  create their host-side links there;
* one or more "pod" netns, passed as ``CNI_NETNS=/var/run/netns/<pod>``.

Every netns is deleted at teardown, which also destroys every link in it.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from whereabouts_py.cni.install import install_cni
from whereabouts_py_dev.controlplane import ControlPlane
from whereabouts_py_dev.netns import ip, kernel_lacks
from whereabouts_py_dev.nodes import SimulatedNodes

REFERENCE_PLUGINS = Path("/usr/lib/cni")
MAIN_PLUGINS = ("bridge", "macvlan", "ipvlan", "ptp")
NODE_MASTER = "eth1"

# The README's test command runs as root (network namespaces, apt): a missing
# privilege or plugin is a broken set-up, reported as a failure, never a skip.
if os.geteuid() != 0:  # pragma: no cover - the suite runs as root in CI
    raise RuntimeError("tests/netns needs root: network namespaces are created for real")


@pytest.fixture(scope="session")
def cni_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CNI bin dir: our shim as ``whereabouts`` plus links to the reference plugins."""
    directory = tmp_path_factory.mktemp("netns-cni-bin")
    install_cni(directory, name="whereabouts")
    for name in MAIN_PLUGINS:
        source = REFERENCE_PLUGINS / name
        if not source.is_file():
            pytest.fail(f"reference plugin {source} is missing: run 'make setup'")
        (directory / name).symlink_to(source)
    return directory


@pytest.fixture
def node_a(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[SimulatedNodes]:
    with SimulatedNodes(control_plane, tmp_path / "nodes", ["node-a"], namespace) as nodes:
        yield nodes


@pytest.fixture
def make_netns() -> Iterator[Callable[[str], str]]:
    """Create uniquely named network namespaces; delete them all at teardown."""
    created: list[str] = []

    def make(role: str) -> str:
        name = f"wbn-{role}-{uuid.uuid4().hex[:8]}"
        ip("netns", "add", name)
        created.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    try:
        yield make
    finally:
        failures = []
        for name in reversed(created):
            done = subprocess.run(
                ["ip", "netns", "del", name], capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                failures.append(f"{name}: {done.stderr.strip()}")
        assert failures == [], f"could not delete netns: {failures}"


@pytest.fixture(scope="session")
def kernel_link_kinds() -> Callable[[str], str | None]:
    """Why this kernel cannot make a link of a kind (e.g. ``ipvlan``), probed once each."""
    known: dict[str, str | None] = {}

    def lacks(kind: str) -> str | None:
        if kind not in known:
            known[kind] = kernel_lacks(kind)
        return known[kind]

    return lacks


@pytest.fixture
def node_master() -> str:
    """The node netns interface that macvlan and ipvlan use as their master."""
    return NODE_MASTER


@pytest.fixture
def node_netns(make_netns: Callable[[str], str]) -> str:
    """The node's netns with ``eth1`` (one end of a veth pair, both ends inside it) up."""
    name = make_netns("node")
    ip("-n", name, "link", "add", NODE_MASTER, "type", "veth", "peer", "name", "eth1peer")
    ip("-n", name, "link", "set", NODE_MASTER, "up")
    ip("-n", name, "link", "set", "eth1peer", "up")
    return name
