"""Persistent addresses on the local control plane: claims and pods made as KubeVirt makes them.

Real daemons on two simulated nodes answer the real shim; the pods are real Pod
objects carrying the ``k8s.v1.cni.cncf.io/networks`` annotation with an
``ipam-claim-reference``, the IPAMClaims real objects of the CRD taken from
github.com/k8snetworkplumbingwg/ipamclaims, and the reconciler a real process.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.reconciler.harness import running_reconciler, wait_until
from whereabouts_py.cni.install import install_cni
from whereabouts_py.core.allocator import Allocation
from whereabouts_py.core.codec import pool_name
from whereabouts_py.store.kube import KubeStore, connect
from whereabouts_py_dev.controlplane import ControlPlane
from whereabouts_py_dev.nodes import SimulatedNodes
from whereabouts_py_dev.runtime import Outcome, invoke, pod_args

pytestmark = pytest.mark.kube

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


def blue(*, persistent: bool = True, name: str = "blue") -> dict[str, Any]:
    """A dual-stack network that opts in to persistent addresses as KubeVirt expects."""
    config: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": name,
        "type": "macvlan",
        "ipam": {
            "type": "whereabouts",
            "ipRanges": [{"range": "10.120.0.0/28"}, {"range": "fd00:120::/124"}],
        },
    }
    if persistent:
        config["allowPersistentIPs"] = True
    return config


@dataclass
class Lab:
    """Pods and claims in one namespace (the store's too), deleted at the end."""

    plane: ControlPlane
    namespace: str
    shim: Path
    nodes: SimulatedNodes
    made: list[tuple[str, str, str]] = field(default_factory=list)  # kind, namespace, name

    def claim(self, name: str, namespace: str | None = None, network: str = "blue") -> None:
        where = namespace or self.namespace
        manifest = {
            "apiVersion": "k8s.cni.cncf.io/v1alpha1",
            "kind": "IPAMClaim",
            "metadata": {"name": name, "namespace": where},
            "spec": {"network": network, "interface": "net1"},
        }
        self.plane.kubectl("create", "-f", "-", input_text=json.dumps(manifest))
        self.made.append(("ipamclaim", where, name))

    def claim_status(self, name: str) -> dict[str, Any]:
        found = self.plane.kubectl("get", "ipamclaim", "-n", self.namespace, name, "-o", "json")
        return dict(json.loads(found.stdout).get("status") or {})

    def delete_claim(self, name: str) -> None:
        self.plane.kubectl("delete", "ipamclaim", "-n", self.namespace, name, "--wait=true")

    def pod(self, name: str, node: str, networks: list[dict[str, str]]) -> str:
        """A virt-launcher-like pod bound to ``node``; returns its UID."""
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "annotations": {"k8s.v1.cni.cncf.io/networks": json.dumps(networks)},
            },
            "spec": {"nodeName": node, "containers": [{"name": "compute", "image": PAUSE_IMAGE}]},
        }
        made = self.plane.kubectl(
            "create", "-f", "-", "-o", "json", input_text=json.dumps(manifest)
        )
        self.made.append(("pod", self.namespace, name))
        return str(json.loads(made.stdout)["metadata"]["uid"])

    def delete_pod(self, name: str) -> None:
        self.plane.kubectl(
            "delete", "pod", "-n", self.namespace, name, "--force", "--grace-period=0"
        )

    def cni(
        self,
        command: str,
        node: str,
        pod: str,
        uid: str,
        config: dict[str, Any] | None = None,
    ) -> Outcome:
        return invoke(
            self.shim,
            command,
            config or blue(),
            container_id=f"ctr-{pod}",
            ifname="net1",
            netns=f"/var/run/netns/{pod}",
            args=pod_args(self.namespace, pod, uid=uid),
            env=self.nodes[node].environment(),
        )

    def entries(self) -> dict[str, dict[str, Any]]:
        """Every allocation of the network, by address."""
        found: dict[str, dict[str, Any]] = {}
        for spec in self.plane.specs("ippools", self.namespace).values():
            prefix = "10.120.0." if "." in spec["range"] else "fd00:120::"
            for key, holder in spec.get("allocations", {}).items():
                address = f"{prefix}{int(key)}" if prefix.endswith(".") else f"{prefix}{int(key):x}"
                found[address] = holder
        return found

    def cleanup(self) -> None:
        for kind, namespace, name in reversed(self.made):
            self.plane.kubectl(
                "delete",
                kind,
                "-n",
                namespace,
                name,
                "--ignore-not-found",
                "--wait=false",
                *(("--force", "--grace-period=0") if kind == "pod" else ()),
            )


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_cni(tmp_path_factory.mktemp("cni-bin"))


@pytest.fixture
def lab(control_plane: ControlPlane, namespace: str, shim: Path, tmp_path: Path) -> Iterator[Lab]:
    with SimulatedNodes(
        control_plane, tmp_path / "nodes", ["node-a", "node-b"], namespace
    ) as nodes:
        made = Lab(control_plane, namespace, shim, nodes)
        try:
            yield made
        finally:
            made.cleanup()


def claimed(name: str) -> list[dict[str, str]]:
    """The networks annotation KubeVirt writes for a VM interface on ``blue``."""
    return [{"name": "blue", "namespace": "default", "ipam-claim-reference": name}]


def test_a_vm_keeps_its_addresses_across_stop_and_start(lab: Lab) -> None:
    lab.claim("vm-a.blue")
    first_uid = lab.pod("launcher-a-1", "node-a", claimed("vm-a.blue"))
    first = lab.cni("ADD", "node-a", "launcher-a-1", first_uid)
    assert first.ok, first.stdout
    addresses = first.addresses()
    assert addresses == ["10.120.0.1/28", "fd00:120::1/124"]
    status = lab.claim_status("vm-a.blue")
    assert status["ips"] == addresses  # CIDR strings, one per range
    assert status["ownerPod"] == {"name": "launcher-a-1"}
    # The stored form is an allocation like any other, with its claim.
    assert lab.entries()["10.120.0.1"] == {
        "id": "ctr-launcher-a-1",
        "podref": f"{lab.namespace}/launcher-a-1",
        "ifname": "net1",
        "ipamclaimref": f"{lab.namespace}/vm-a.blue",
        "node": "node-a",
        "poduid": first_uid,
    }

    # The VM stops: DEL and the pod's deletion leave the addresses with the claim.
    assert lab.cni("DEL", "node-a", "launcher-a-1", first_uid).ok
    lab.delete_pod("launcher-a-1")
    held = lab.entries()
    assert held["10.120.0.1"]["ipamclaimref"] == held["fd00:120::1"]["ipamclaimref"]
    stranger_uid = lab.pod("web-0", "node-a", [{"name": "blue"}])
    stranger = lab.cni("ADD", "node-a", "web-0", stranger_uid)
    assert stranger.addresses() == ["10.120.0.2/28", "fd00:120::2/124"]

    # It starts again, on the other node: the same addresses.
    second_uid = lab.pod("launcher-a-2", "node-b", claimed("vm-a.blue"))
    second = lab.cni("ADD", "node-b", "launcher-a-2", second_uid)
    assert second.ok, second.stdout
    assert second.addresses() == addresses
    assert lab.entries()["10.120.0.1"]["podref"] == f"{lab.namespace}/launcher-a-2"
    assert lab.claim_status("vm-a.blue")["ips"] == addresses
    assert len(lab.entries()) == 4  # nothing else was taken


def test_live_migration_keeps_the_addresses_and_never_hands_them_out(lab: Lab) -> None:
    lab.claim("vm-m.blue")
    source_uid = lab.pod("launcher-m-src", "node-a", claimed("vm-m.blue"))
    source = lab.cni("ADD", "node-a", "launcher-m-src", source_uid)
    assert source.ok, source.stdout
    # The target pod starts on the other node while the source still runs.
    target_uid = lab.pod("launcher-m-dst", "node-b", claimed("vm-m.blue"))
    target = lab.cni("ADD", "node-b", "launcher-m-dst", target_uid)
    assert target.ok, target.stdout
    assert target.addresses() == source.addresses() == ["10.120.0.1/28", "fd00:120::1/124"]
    # A third pod on either node gets other addresses, before and after the source goes.
    third_uid = lab.pod("web-1", "node-b", [{"name": "blue"}])
    third = lab.cni("ADD", "node-b", "web-1", third_uid)
    assert third.addresses() == ["10.120.0.2/28", "fd00:120::2/124"]
    assert lab.cni("DEL", "node-a", "launcher-m-src", source_uid).ok
    lab.delete_pod("launcher-m-src")
    assert lab.cni("DEL", "node-b", "web-1", third_uid).ok
    fourth_uid = lab.pod("web-2", "node-a", [{"name": "blue"}])
    fourth = lab.cni("ADD", "node-a", "web-2", fourth_uid)
    assert fourth.addresses() == ["10.120.0.2/28", "fd00:120::2/124"]
    held = lab.entries()
    assert held["10.120.0.1"]["podref"] == f"{lab.namespace}/launcher-m-dst"
    assert held["fd00:120::1"]["ipamclaimref"] == f"{lab.namespace}/vm-m.blue"
    # The cluster-wide reservations followed the claim to the target and outlived the source.
    reserved = lab.plane.specs("overlappingrangeipreservations", lab.namespace)
    assert reserved["10.120.0.1"]["podref"] == f"{lab.namespace}/launcher-m-dst"
    assert reserved["10.120.0.1"]["ipamclaimref"] == f"{lab.namespace}/vm-m.blue"
    assert reserved["fd00-120--1"]["ipamclaimref"] == f"{lab.namespace}/vm-m.blue"


def test_without_the_opt_in_a_claim_reference_is_ignored(lab: Lab) -> None:
    lab.claim("vm-n.blue")
    plain = blue(persistent=False)
    first_uid = lab.pod("launcher-n-1", "node-a", claimed("vm-n.blue"))
    first = lab.cni("ADD", "node-a", "launcher-n-1", first_uid, plain)
    second_uid = lab.pod("launcher-n-2", "node-b", claimed("vm-n.blue"))
    second = lab.cni("ADD", "node-b", "launcher-n-2", second_uid, plain)
    assert first.addresses() == ["10.120.0.1/28", "fd00:120::1/124"]
    assert second.addresses() == ["10.120.0.2/28", "fd00:120::2/124"]
    assert all("ipamclaimref" not in holder for holder in lab.entries().values())
    assert lab.claim_status("vm-n.blue") == {}
    assert lab.cni("DEL", "node-a", "launcher-n-1", first_uid, plain).ok
    assert sorted(lab.entries()) == ["10.120.0.2", "fd00:120::2"]


def test_a_claim_of_another_namespace_cannot_be_used(lab: Lab) -> None:
    elsewhere = f"o-{uuid.uuid4().hex[:8]}"
    lab.plane.kubectl("create", "namespace", elsewhere)
    lab.claim("vm-x.blue", namespace=elsewhere)
    by_name_uid = lab.pod("launcher-x-1", "node-a", claimed("vm-x.blue"))
    by_name = lab.cni("ADD", "node-a", "launcher-x-1", by_name_uid)
    assert by_name.code == 7, by_name.stdout
    assert by_name.output is not None
    assert f"no IPAMClaim {lab.namespace}/vm-x.blue exists" in by_name.output["msg"]
    by_path_uid = lab.pod("launcher-x-2", "node-a", claimed(f"{elsewhere}/vm-x.blue"))
    by_path = lab.cni("ADD", "node-a", "launcher-x-2", by_path_uid)
    assert by_path.code == 7, by_path.stdout
    assert by_path.output is not None
    assert f"{elsewhere}/vm-x.blue" in by_path.output["msg"]
    assert lab.entries() == {}  # nothing half-written


def test_deleting_the_claim_frees_its_addresses_within_seconds(lab: Lab, tmp_path: Path) -> None:
    lab.claim("vm-d.blue")
    lab.claim("vm-k.blue")
    uid = lab.pod("launcher-d-1", "node-a", claimed("vm-d.blue"))
    assert lab.cni("ADD", "node-a", "launcher-d-1", uid).addresses() == [
        "10.120.0.1/28",
        "fd00:120::1/124",
    ]
    kept_uid = lab.pod("launcher-k-1", "node-b", claimed("vm-k.blue"))
    assert lab.cni("ADD", "node-b", "launcher-k-1", kept_uid).ok
    with running_reconciler(
        lab.plane, lab.namespace, tmp_path / "rec", sweep_interval_s=300.0, grace_period_s=1.0
    ) as reconciler:
        # The pods go; the reconciler sees them go and keeps what the claims own.
        lab.delete_pod("launcher-d-1")
        lab.delete_pod("launcher-k-1")
        reconciler.wait_for(f"pod={lab.namespace}/launcher-k-1", timeout_s=10, count=2)
        assert sorted(lab.entries()) == ["10.120.0.1", "10.120.0.2", "fd00:120::1", "fd00:120::2"]

        lab.delete_claim("vm-d.blue")
        took = wait_until(
            lambda: sorted(lab.entries()) == ["10.120.0.2", "fd00:120::2"],
            timeout_s=30,
            what="the deleted claim's addresses released",
        )
        assert took < 10
        released = reconciler.metrics()['whereabouts_gc_releases_total{reason="claim_deleted"}']
        assert released == 2.0
    # The other claim still owns its addresses, though no pod holds them.
    assert lab.entries()["10.120.0.2"]["ipamclaimref"] == f"{lab.namespace}/vm-k.blue"


CLAIM_CRD = Path(__file__).resolve().parents[2] / "crds/ipamclaims/k8s.cni.cncf.io_ipamclaims.yaml"


def test_a_reconciler_started_before_the_claim_crd_acts_on_claims_once_it_exists(
    lab: Lab, tmp_path: Path
) -> None:
    """KubeVirt installed after whereabouts-py: no restart needed for claim deletions."""
    lab.plane.kubectl("delete", "crd", "ipamclaims.k8s.cni.cncf.io", "--wait=true")
    try:
        with running_reconciler(
            lab.plane, lab.namespace, tmp_path / "rec", sweep_interval_s=300.0
        ) as reconciler:
            reconciler.wait_for("IPAMClaims: not served", timeout_s=20)
            lab.plane.kubectl("apply", "-f", str(CLAIM_CRD))
            lab.plane.kubectl(
                "wait", "--for=condition=established", "crd/ipamclaims.k8s.cni.cncf.io"
            )
            reconciler.wait_for("IPAMClaims: served now", timeout_s=30)
            lab.claim("vm-l.blue")
            uid = lab.pod("launcher-l-1", "node-a", claimed("vm-l.blue"))
            assert lab.cni("ADD", "node-a", "launcher-l-1", uid).addresses() == [
                "10.120.0.1/28",
                "fd00:120::1/124",
            ]
            lab.delete_claim("vm-l.blue")
            took = wait_until(
                lambda: lab.entries() == {},
                timeout_s=30,
                what="the deleted claim's addresses released",
            )
            assert took < 10
    finally:
        lab.plane.kubectl("apply", "-f", str(CLAIM_CRD))
        lab.plane.kubectl("wait", "--for=condition=established", "crd/ipamclaims.k8s.cni.cncf.io")


def test_the_sweep_frees_what_a_vanished_claim_owned(lab: Lab, tmp_path: Path) -> None:
    """Claims deleted while no reconciler ran: its first sweep frees what they owned."""
    lab.claim("vm-s.blue")
    store = KubeStore(connect(str(lab.plane.kubeconfig)), lab.namespace)
    ns = lab.namespace
    orphan = Allocation("ctr-gone", f"{ns}/gone", "net1", "node-a", "u-1", f"{ns}/gone.blue")
    kept = Allocation("ctr-kept", f"{ns}/gone-2", "net1", "node-a", "u-2", f"{ns}/vm-s.blue")
    name = pool_name("10.120.0.0/28")
    store.write_pool(store.get_pool(name, "10.120.0.0/28"), {3: orphan, 4: kept})
    lab.pod("launcher-s-1", "node-a", claimed("vm-s.blue"))  # the reconciler waits for a pod
    with running_reconciler(lab.plane, lab.namespace, tmp_path / "rec", grace_period_s=1.0):
        wait_until(
            lambda: set(store.get_pool(name, "10.120.0.0/28").allocations) == {4},
            timeout_s=20,
            what="the startup sweep releasing the vanished claim's address",
        )


def test_a_large_range_finds_the_claims_block_from_any_node(lab: Lab) -> None:
    """Blocks of a large range are chosen per node: the claim's address is found across them."""
    large = dict(blue(), ipam={"type": "whereabouts", "range": "10.121.0.0/16"})
    lab.claim("vm-l.blue")
    lab.claim("vm-z.blue")
    source_uid = lab.pod("launcher-l-src", "node-a", claimed("vm-l.blue"))
    source = lab.cni("ADD", "node-a", "launcher-l-src", source_uid, large)
    assert source.ok, source.stdout
    stranger_uid = lab.pod("web-l", "node-b", [{"name": "blue"}])
    stranger = lab.cni("ADD", "node-b", "web-l", stranger_uid, large)
    assert stranger.ok and stranger.addresses() != source.addresses()
    # Found through the claim's status.ips ...
    target_uid = lab.pod("launcher-l-dst", "node-b", claimed("vm-l.blue"))
    target = lab.cni("ADD", "node-b", "launcher-l-dst", target_uid, large)
    assert target.addresses() == source.addresses()
    # ... and through the pools when the status does not list it (e.g. its write was lost).
    other_uid = lab.pod("launcher-z-1", "node-a", claimed("vm-z.blue"))
    other = lab.cni("ADD", "node-a", "launcher-z-1", other_uid, large)
    assert other.ok, other.stdout
    lab.plane.kubectl(
        "patch",
        "ipamclaim",
        "-n",
        lab.namespace,
        "vm-z.blue",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"ips": []}}),
    )
    assert lab.claim_status("vm-z.blue")["ips"] == []
    moved_uid = lab.pod("launcher-z-2", "node-b", claimed("vm-z.blue"))
    moved = lab.cni("ADD", "node-b", "launcher-z-2", moved_uid, large)
    assert moved.addresses() == other.addresses()
    assert lab.claim_status("vm-z.blue")["ips"] == other.addresses()
    held = [
        holder
        for spec in lab.plane.specs("ippools", lab.namespace).values()
        for holder in spec.get("allocations", {}).values()
    ]
    assert sorted(h.get("ipamclaimref", "") for h in held) == [
        "",
        f"{lab.namespace}/vm-l.blue",
        f"{lab.namespace}/vm-z.blue",
    ]
