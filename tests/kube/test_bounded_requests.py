"""Ranges with huge exclusions answer as fast as any other, through the real shim and daemon.

Before the interval arithmetic, a daemon walked every empty block of these
ranges: the first ADD of an IPv4 /8 without its lower /9 cost seconds of CPU,
and the IPv6 ones never answered while a daemon thread kept a core busy.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from whereabouts_py.cni.install import install_cni
from whereabouts_py_dev.controlplane import ControlPlane
from whereabouts_py_dev.nodes import SimulatedNodes
from whereabouts_py_dev.runtime import Outcome, invoke, pod_args

# (range, exclude, the first address handed out, the second)
RANGES = [
    ("fd00::/64", ["fd00::/80"], "fd00::1:0:0:0/64", "fd00::1:0:0:1/64"),
    ("2001:db8::/30", ["2001:db8::/32"], "2001:db9::/30", "2001:db9::1/30"),
    ("10.0.0.0/8", ["10.0.0.0/9"], "10.128.0.0/8", "10.128.0.1/8"),
]
# Generous: each ADD takes milliseconds of daemon CPU; the old walk took seconds to forever.
DAEMON_CPU_BUDGET_S = 5.0
SHIM_TIMEOUT_S = "15"


@pytest.fixture
def node(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[SimulatedNodes]:
    with SimulatedNodes(control_plane, tmp_path / "nodes", ["node-b"], namespace) as nodes:
        yield nodes


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def add(shim: Path, config: dict[str, Any], env: dict[str, str], pod: str) -> Outcome:
    """One ADD, retried only while a fresh apiserver still initialises the CRDs' storage."""
    deadline = time.monotonic() + 30
    while True:
        outcome = invoke(
            shim,
            "ADD",
            config,
            container_id=f"ctr-{pod}",
            ifname="net1",
            netns=f"/var/run/netns/{pod}",
            args=pod_args("default", f"pod-{pod}", uid=f"uid-{pod}"),
            env=env,
            timeout_s=30,
        )
        starting = outcome.code == 11 and "initializing" in outcome.stdout
        if not starting or time.monotonic() > deadline:
            return outcome
        time.sleep(0.5)


def test_huge_excludes_give_the_first_address_after_them_at_once(
    node: SimulatedNodes, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    shim = install_cni(tmp_path / "bin")
    daemon = node["node-b"]
    env = {**daemon.environment(), "WHEREABOUTS_PY_TIMEOUT": SHIM_TIMEOUT_S}
    cpu_before = cpu_seconds(daemon.process.pid)
    for index, (cidr, exclude, first, second) in enumerate(RANGES):
        config: dict[str, Any] = {
            "cniVersion": "1.0.0",
            "name": f"bounded{index}",
            "type": "macvlan",
            "ipam": {"type": "whereabouts", "range": cidr, "exclude": exclude},
        }
        for pod, expected in (("a", first), ("b", second)):
            outcome = add(shim, config, env, f"{index}-{pod}")
            assert outcome.ok, outcome.stdout + daemon.log.read_text()[-2000:]
            assert outcome.addresses() == [expected]
    used = cpu_seconds(daemon.process.pid) - cpu_before
    assert used < DAEMON_CPU_BUDGET_S, f"the daemon used {used:.1f}s of CPU for six ADDs"
    # Each allocation went to the block of its address, as for any other range.
    pools = control_plane.specs("ippools", namespace)
    ranges = sorted(spec["range"] for spec in pools.values())
    assert ranges == ["10.128.0.0/26", "2001:db9::/122", "fd00::1:0:0:0/122"]


def full_blocks_held_elsewhere(plane: ControlPlane, namespace: str, cidr: str) -> int:
    """Fill every /26 block of ``cidr`` and give each block's Lease to another node."""
    network = ipaddress.ip_network(cidr)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    items: list[dict[str, Any]] = []
    blocks = list(network.subnets(new_prefix=26))
    for block in blocks:
        name = f"{block.network_address}-26"
        allocations = {
            str(offset): {"id": f"ctr-{name}-{offset}", "podref": f"other/pod-{offset}"}
            for offset in range(64)
        }
        items.append(
            {
                "apiVersion": "whereabouts.cni.cncf.io/v1alpha1",
                "kind": "IPPool",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"range": str(block), "allocations": allocations},
            }
        )
        items.append(
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": f"whereabouts-py-pool-{name}", "namespace": namespace},
                "spec": {
                    "holderIdentity": "other-node",
                    "leaseDurationSeconds": 3600,
                    "acquireTime": now,
                    "renewTime": now,
                },
            }
        )
    listing = {"apiVersion": "v1", "kind": "List", "items": items}
    plane.kubectl("create", "-f", "-", input_text=json.dumps(listing))
    return len(blocks)


def test_the_daemon_stops_working_for_a_shim_that_gave_up(
    node: SimulatedNodes, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """A full /20 whose blocks other nodes hold: each block costs a Lease wait (3 s).

    Walking all 64 would take over three minutes; the shim gives up after 2 s,
    and the daemon must stop at its next block instead of walking on, for
    every retry.
    """
    blocks = full_blocks_held_elsewhere(control_plane, namespace, "10.70.0.0/20")
    shim = install_cni(tmp_path / "bin")
    daemon = node["node-b"]
    config: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": "fullnet",
        "type": "macvlan",
        "ipam": {"type": "whereabouts", "range": "10.70.0.0/20"},
    }
    env = {**daemon.environment(), "WHEREABOUTS_PY_TIMEOUT": "2"}
    retries = 3  # as a runtime retries a failed ADD: the work must not pile up
    for _ in range(retries):
        outcome = add(shim, config, env, "late")
        assert outcome.code == 11, outcome.stdout
        assert "did not answer within 2s" in outcome.stdout

    deadline = time.monotonic() + 20
    while daemon.log.read_text().count("hung up") < retries and time.monotonic() < deadline:
        time.sleep(0.2)
    log = daemon.log.read_text()
    abandoned = [line for line in log.splitlines() if "ADD failed (code 11): gave up" in line]
    assert len(abandoned) == retries and all("hung up" in line for line in abandoned), log[-3000:]
    tried = log.count("lease still held elsewhere")
    time.sleep(4.0)  # more than one block's Lease wait: a walking daemon would try another
    assert daemon.log.read_text().count("lease still held elsewhere") == tried
    assert tried < blocks // 4, f"{tried} blocks tried for a shim that left after 2 s"
