"""After failures (apiserver restart, daemon killed mid-flight) the pools stay consistent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from whereabouts_py.cni.install import install_cni
from whereabouts_py_dev.controlplane import ControlPlane, running
from whereabouts_py_dev.nodes import SimulatedNodes
from whereabouts_py_dev.runtime import Outcome, invoke, pod_args

NETWORK: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "failnet",
    "type": "macvlan",
    "ipam": {"type": "whereabouts", "range": "10.66.0.0/24"},
}


def attach(shim: Path, env: dict[str, str], pod: str, command: str = "ADD") -> Outcome:
    return invoke(
        shim,
        command,
        NETWORK,
        container_id=f"ctr-{pod}",
        ifname="net1",
        netns="/var/run/netns/x",
        args=pod_args("default", pod),
        env={**env, "WHEREABOUTS_PY_TIMEOUT": "20"},
    )


def consistency(plane: ControlPlane, namespace: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "whereabouts_py.kubectl.plugin", "-n", namespace, "check"],
        env=plane.environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def held(plane: ControlPlane, namespace: str) -> dict[str, dict[str, Any]]:
    return {
        key: value
        for spec in plane.specs("ippools", namespace).values()
        for key, value in spec["allocations"].items()
    }


@pytest.mark.kube  # starts a control plane of its own, to restart it
def test_apiserver_restart_answers_try_again_then_recovers(tmp_path: Path) -> None:
    shim = install_cni(tmp_path / "bin")
    with running(tmp_path / "cp") as plane:
        with SimulatedNodes(plane, tmp_path / "nodes", ["node-a"]) as nodes:
            env = nodes["node-a"].environment()
            assert attach(shim, env, "before").addresses() == ["10.66.0.1/24"]
            plane.stop_apiserver()
            started = time.monotonic()
            down = attach(shim, env, "during")
            assert down.code == 11, down.stdout
            assert "not reachable" in (down.output or {}).get("msg", "")
            status = invoke(shim, "STATUS", NETWORK, env=env)
            assert status.code == 50, status.stdout
            assert time.monotonic() - started < 30
            plane.start_apiserver()
            # The runtime retries the failed ADD; the daemon reconnects by itself.
            retried = attach(shim, env, "during")
            assert retried.addresses() == ["10.66.0.2/24"], retried.stdout
            assert attach(shim, env, "after").addresses() == ["10.66.0.3/24"]
        allocations = held(plane, "kube-system")
        assert sorted(a["podref"] for a in allocations.values()) == [
            "default/after",
            "default/before",
            "default/during",
        ]
        check = consistency(plane, "kube-system")
        assert check.returncode == 0, check.stdout + check.stderr
        assert "consistent" in check.stderr


def test_daemon_killed_mid_flight_leaves_nothing_a_retry_cannot_finish(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    shim = install_cni(tmp_path / "bin")
    pods = [f"k{i}" for i in range(24)]
    with SimulatedNodes(control_plane, tmp_path / "one", ["node-k"], namespace) as nodes:
        env = nodes["node-k"].environment()
        victim = nodes["node-k"].process
        with ThreadPoolExecutor(max_workers=24) as pool:
            futures = [pool.submit(attach, shim, env, pod) for pod in pods]
            time.sleep(0.15)
            os.kill(victim.pid, signal.SIGKILL)
            first = [future.result() for future in futures]
    # Some ADDs finished, some were cut off: those answered an error, never a result.
    assert all(o.ok or o.code in (11, 999) for o in first), [o.stdout for o in first]
    # A new daemon on the node; the runtime retries every ADD that failed.
    with SimulatedNodes(control_plane, tmp_path / "two", ["node-k"], namespace) as nodes:
        env = nodes["node-k"].environment()
        retried = {
            pod: (outcome if outcome.ok else attach(shim, env, pod))
            for pod, outcome in zip(pods, first, strict=True)
        }
        assert all(o.ok for o in retried.values()), [o.stdout for o in retried.values()]
        # Idempotent: asking again gives every pod the address it already has.
        again = {pod: attach(shim, env, pod).addresses() for pod in pods}
        assert again == {pod: o.addresses() for pod, o in retried.items()}
    allocations = held(control_plane, namespace)
    owners = Counter(a["podref"] for a in allocations.values())
    assert owners == Counter({f"default/{pod}": 1 for pod in pods})
    check = consistency(control_plane, namespace)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "consistent" in check.stderr
