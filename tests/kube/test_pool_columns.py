"""`kubectl get ippools` shows how full each pool is, and bad pools are refused clearly."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.reconciler.harness import running_reconciler
from whereabouts_py.cni.install import install_cni
from whereabouts_py_dev.controlplane import ControlPlane
from whereabouts_py_dev.nodes import SimulatedNodes
from whereabouts_py_dev.runtime import invoke, pod_args

HEADER = ["NAME", "RANGE", "BLOCK-OF", "ALLOCATED", "FREE", "USED%", "NETWORK", "AGE"]


def table_rows(plane: ControlPlane, namespace: str, *names: str) -> list[list[str]]:
    """``kubectl get ipp`` rows cut at the header's column starts (an empty cell stays "")."""
    table = plane.kubectl("get", "ipp", "-n", namespace, *names).stdout.splitlines()
    assert table[0].split() == HEADER
    starts = [table[0].index(column) for column in HEADER]
    ends = [*starts[1:], None]
    return [
        [line[start:end].strip() for start, end in zip(starts, ends, strict=True)]
        for line in table[1:]
    ]


def get_row(plane: ControlPlane, namespace: str, name: str) -> list[str]:
    (row,) = table_rows(plane, namespace, name)
    return row


def test_columns_follow_every_write_and_go_writes_within_seconds(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    shim = install_cni(tmp_path / "bin")
    config: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": "colnet",
        "type": "macvlan",
        "ipam": {
            "type": "whereabouts",
            "range": "10.33.0.0/28",
            "gateway": "10.33.0.1",
            "network_name": "blue",
        },
    }
    # Live pods (no network-status): the reconciler must keep their addresses.
    for pod in ("c-0", "c-1", "c-2", "go"):
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod, "namespace": namespace},
            "spec": {"nodeName": "node-c", "containers": [{"name": "c", "image": "pause"}]},
        }
        control_plane.kubectl("create", "-f", "-", input_text=json.dumps(manifest))
    with SimulatedNodes(control_plane, tmp_path / "nodes", ["node-c"], namespace) as nodes:
        for pod in ("c-0", "c-1", "c-2"):
            added = invoke(
                shim,
                "ADD",
                config,
                container_id=f"ctr-{pod}",
                ifname="net1",
                netns="/var/run/netns/x",
                args=pod_args(namespace, pod),
                env=nodes["node-c"].environment(),
            )
            assert added.ok, added.stdout
        # A range over 256 addresses is stored as 64-address blocks (63 usable in the first,
        # whose network address is excluded): each row names
        # the range the user configured.
        large = {
            **config,
            "name": "bignet",
            "ipam": {"type": "whereabouts", "range": "fd60:33::/64"},
        }
        added = invoke(
            shim,
            "ADD",
            large,
            container_id="ctr-c-0",
            ifname="net2",
            netns="/var/run/netns/x",
            args=pod_args(namespace, "c-0"),
            env=nodes["node-c"].environment(),
        )
        assert added.ok, added.stdout
    blocks = [
        row[:7] for row in table_rows(control_plane, namespace) if row[1].startswith("fd60:33::")
    ]
    assert blocks == [["fd60-33---122", "fd60:33::/122", "fd60:33::/64", "1", "62", "2", ""]]
    # 14 usable addresses of a /28, less the gateway: 13; 3 held; not a block.
    name, cidr, block_of, allocated, free, used, network, _age = get_row(
        control_plane, namespace, "blue-10.33.0.0-28"
    )
    assert (name, cidr, block_of, allocated, free, used, network) == (
        "blue-10.33.0.0-28",
        "10.33.0.0/28",
        "",
        "3",
        "10",
        "23",
        "blue",
    )
    # A writer that knows nothing of status (the Go project) drops it; the
    # reconciler restores the counts within seconds.
    pool = json.loads(
        control_plane.kubectl(
            "get", "ippool", "-n", namespace, "blue-10.33.0.0-28", "-o", "json"
        ).stdout
    )
    del pool["status"]
    pool["spec"]["allocations"]["9"] = {
        "id": "go-ctr",
        "podref": f"{namespace}/go",
        "ifname": "net1",
    }
    control_plane.kubectl("replace", "-f", "-", input_text=json.dumps(pool))
    status = control_plane.kubectl(
        "get", "ipp", "-n", namespace, "blue-10.33.0.0-28", "-o", "jsonpath={.status}"
    ).stdout
    assert status == ""
    with running_reconciler(control_plane, namespace, tmp_path / "rec", grace_period_s=3600):
        deadline = time.monotonic() + 10
        row = get_row(control_plane, namespace, "blue-10.33.0.0-28")
        while row[3] != "4" and time.monotonic() < deadline:
            time.sleep(0.5)
            row = get_row(control_plane, namespace, "blue-10.33.0.0-28")
        # Without the daemon's size (which knew the gateway), the reconciler
        # counts the /28's 14 usable addresses until the daemon writes again.
        assert row[3:6] == ["4", "10", "29"]


def test_schema_refuses_malformed_pools_with_readable_messages(
    control_plane: ControlPlane, namespace: str
) -> None:
    def apply(spec: dict[str, Any]) -> str:
        pool = {
            "apiVersion": "whereabouts.cni.cncf.io/v1alpha1",
            "kind": "IPPool",
            "metadata": {"name": "bad", "namespace": namespace},
            "spec": spec,
        }
        result = control_plane.kubectl("apply", "-f", "-", input_text=json.dumps(pool), check=False)
        assert result.returncode != 0
        return result.stderr

    assert "spec.range must be a CIDR" in apply({"range": "10.0.0.0/33", "allocations": {}})
    assert "spec.range must be a CIDR" in apply({"range": "banana", "allocations": {}})
    assert "keys must be decimal offsets" in apply(
        {"range": "10.0.0.0/24", "allocations": {"x1": {"id": "c", "podref": "a/b"}}}
    )
    assert "Required value" in apply({"range": "10.0.0.0/24"})
