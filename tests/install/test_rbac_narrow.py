"""Our identities cannot touch the control plane's Leases, and still do their work.

A Role cannot name Leases by prefix, and a pool's Lease has a name made from
the pool's, so our Leases live in a namespace of their own
(``whereabouts-py-leases``); the rights there are the only rights on Leases
our ServiceAccounts hold. Every verb granted is one the code uses, and no
other: the reconciler never creates an IPPool (it deletes empty blocks).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.reconciler.harness import running_reconciler
from whereabouts_py.cni.install import install_cni
from whereabouts_py_dev.controlplane import ControlPlane
from whereabouts_py_dev.nodes import SimulatedNodes
from whereabouts_py_dev.runtime import invoke, pod_args

ROOT = Path(__file__).resolve().parents[2]
INSTALL = "kube-system"
LEASES = "whereabouts-py-leases"
DAEMON = "system:serviceaccount:kube-system:whereabouts-daemon"
RECONCILER = "system:serviceaccount:kube-system:whereabouts-reconciler"
CONTROL_PLANE_LEASES = ("kube-scheduler", "kube-controller-manager")
POOLS = "ippools.whereabouts.cni.cncf.io"
RESERVATIONS = "overlappingrangeipreservations.whereabouts.cni.cncf.io"
RANGE = "10.46.0.0/22"  # stored in blocks: every ADD takes its block's Lease
NETWORK: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "narrownet",
    "type": "macvlan",
    "ipam": {"type": "whereabouts", "range": RANGE},
}


@pytest.fixture(scope="module")
def applied(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "-k", str(ROOT / "manifests"))


def can_i(plane: ControlPlane, user: str, verb: str, resource: str, namespace: str) -> bool:
    """``kubectl auth can-i`` through the admin kubeconfig, impersonating ``user``."""
    answer = plane.kubectl(
        "auth", "can-i", verb, resource, "-n", namespace, f"--as={user}", check=False
    )
    return answer.stdout.strip() == "yes"


@pytest.mark.parametrize("user", [DAEMON, RECONCILER])
def test_the_control_planes_leases_are_out_of_reach(
    control_plane: ControlPlane, applied: None, user: str
) -> None:
    for lease in CONTROL_PLANE_LEASES:
        for verb in ("get", "update", "patch", "delete"):
            assert not can_i(control_plane, user, verb, f"leases/{lease}", INSTALL), (verb, lease)
    for verb in ("create", "list", "watch", "deletecollection"):
        assert not can_i(control_plane, user, verb, "leases", INSTALL), verb
    # ... and so is any other namespace's.
    assert not can_i(control_plane, user, "update", "leases/anything", "default")


@pytest.mark.parametrize(
    ("user", "lease"),
    [(DAEMON, "whereabouts-py-pool-10.46.0.0-26"), (RECONCILER, "whereabouts-py-reconciler")],
)
def test_our_leases_are_writable_in_their_own_namespace(
    control_plane: ControlPlane, applied: None, user: str, lease: str
) -> None:
    for verb in ("get", "update"):
        assert can_i(control_plane, user, verb, f"leases/{lease}", LEASES), verb
    assert can_i(control_plane, user, "create", "leases", LEASES)
    unused = ("list",)
    # A node asks for a shared pool's turn by patching an annotation (store note_lease).
    assert can_i(control_plane, user, "patch", f"leases/{lease}", LEASES) is (user == DAEMON)
    # The reconciler deletes an empty block's Lease with the block; the daemon never deletes.
    assert can_i(control_plane, user, "delete", f"leases/{lease}", LEASES) is (user == RECONCILER)
    # A daemon waiting for a pool's Lease watches it (store watch_lease); the reconciler never.
    assert can_i(control_plane, user, "watch", f"leases/{lease}", LEASES) is (user == DAEMON)
    for verb in unused:
        assert not can_i(control_plane, user, verb, f"leases/{lease}", LEASES), verb


def test_each_process_holds_exactly_the_verbs_its_code_uses(
    control_plane: ControlPlane, applied: None
) -> None:
    expected = {
        # store calls of whereabouts_py/daemon: get_pool, list_pools, watch_pool,
        # write_pool (new blocks are created); get/create/update/delete_reservation
        (DAEMON, POOLS): {"get", "list", "watch", "create", "update"},
        (DAEMON, RESERVATIONS): {"get", "create", "update", "delete"},
        # whereabouts_py/reconciler: get_pool, list_pools, write_pool of existing pools,
        # delete_pool of empty blocks; get/list/create/delete_reservation (never updates one);
        # watch_pools and watch_reservations (its caches)
        (RECONCILER, POOLS): {"get", "list", "watch", "update", "delete"},
        (RECONCILER, RESERVATIONS): {"get", "list", "watch", "create", "delete"},
    }
    verbs = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
    for (user, resource), granted in expected.items():
        held = {verb for verb in verbs if can_i(control_plane, user, verb, resource, INSTALL)}
        assert held == granted, (user, resource)


def test_daemon_and_reconciler_work_with_leases_in_their_own_namespace(
    control_plane: ControlPlane, applied: None, namespace: str, tmp_path: Path
) -> None:
    shim = install_cni(tmp_path / "bin")
    pod_name = f"narrow-{namespace}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": namespace},
        "spec": {"nodeName": "node-n", "containers": [{"name": "c", "image": "pause"}]},
    }
    control_plane.kubectl("create", "-f", "-", input_text=json.dumps(pod))
    lease_flags = ["--lease-namespace", LEASES]
    try:
        with SimulatedNodes(
            control_plane,
            tmp_path / "nodes",
            ["node-n"],
            INSTALL,
            identity="daemon",
            extra_args=lease_flags,
        ) as nodes:
            added = invoke(
                shim,
                "ADD",
                NETWORK,
                container_id="ctr-narrow",
                ifname="net1",
                netns="/var/run/netns/x",
                args=pod_args(namespace, pod_name),
                env=nodes["node-n"].environment(),
            )
            daemon_log = nodes["node-n"].log.read_text()
            assert added.ok, added.stdout + daemon_log[-2000:]
            (address,) = added.addresses()
            assert address.startswith("10.46.0.")
            # The block's Lease was taken where the daemon may write it, with no denial.
            holders = lease_holders(control_plane, LEASES)
            assert "whereabouts-py-pool-10.46.0.0-26" in holders
            assert "Forbidden" not in daemon_log and "answered 403" not in daemon_log
            assert not any(
                name.startswith("whereabouts-py-") for name in lease_holders(control_plane, INSTALL)
            )

        with running_reconciler(
            control_plane,
            INSTALL,
            tmp_path / "rec",
            identity="rec-narrow",
            kubeconfig=control_plane.kubeconfig_for("reconciler"),
            extra_args=lease_flags,
        ) as reconciler:
            control_plane.kubectl(
                "delete", "pod", "-n", namespace, pod_name, "--grace-period=0", "--force"
            )
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and held_by(control_plane, namespace, pod_name):
                time.sleep(0.2)
            text = reconciler.text()
            assert held_by(control_plane, namespace, pod_name) == [], text[-3000:]
            leader = lease_holders(control_plane, LEASES).get("whereabouts-py-reconciler")
            assert leader == "rec-narrow"
            assert "Forbidden" not in text and "answered 403" not in text
    finally:
        control_plane.kubectl(
            "delete", "ippools", "-n", INSTALL, "10.46.0.0-26", "--ignore-not-found", check=False
        )
        control_plane.kubectl(
            "delete",
            "lease",
            "-n",
            LEASES,
            "whereabouts-py-pool-10.46.0.0-26",
            "--ignore-not-found",
            check=False,
        )


def lease_holders(plane: ControlPlane, namespace: str) -> dict[str, str]:
    return {
        name: str(spec.get("holderIdentity") or "")
        for name, spec in plane.specs("leases", namespace).items()
    }


def held_by(plane: ControlPlane, namespace: str, pod: str) -> list[dict[str, Any]]:
    """The pool entries of ``pod`` in the install namespace."""
    return [
        holder
        for spec in plane.specs("ippools", INSTALL).values()
        for holder in spec.get("allocations", {}).values()
        if holder.get("podref") == f"{namespace}/{pod}"
    ]
