"""ADD/DEL/CHECK/GC/STATUS through the real shim and real daemons on a real apiserver."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from whereabouts_py.cni.install import install_cni
from whereabouts_py_dev.controlplane import ControlPlane
from whereabouts_py_dev.nodes import SimulatedNodes
from whereabouts_py_dev.runtime import Outcome, invoke, pod_args


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_cni(tmp_path_factory.mktemp("cni-bin"))


@pytest.fixture
def node_a(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[SimulatedNodes]:
    with SimulatedNodes(control_plane, tmp_path / "nodes", ["node-a"], namespace) as nodes:
        yield nodes


def network(ipam: dict[str, Any], version: str = "1.0.0", name: str = "testnet") -> dict[str, Any]:
    return {"cniVersion": version, "name": name, "type": "macvlan", "ipam": ipam}


def pools(plane: ControlPlane, namespace: str) -> dict[str, dict[str, Any]]:
    return plane.specs("ippools", namespace)


def reservations(plane: ControlPlane, namespace: str) -> dict[str, dict[str, Any]]:
    return plane.specs("overlappingrangeipreservations", namespace)


def range_allocations(found: dict[str, dict[str, Any]], cidr: str) -> dict[int, dict[str, Any]]:
    """All allocations of a range of the default network, keyed by offset in the range."""
    whole = ipaddress.ip_network(cidr)
    merged: dict[int, dict[str, Any]] = {}
    for name, spec in found.items():
        block = ipaddress.ip_network(spec["range"])
        if block.version != whole.version or not block.subnet_of(whole):  # type: ignore[arg-type]
            continue
        if name.startswith("second-"):
            continue
        base = int(block.network_address) - int(whole.network_address)
        for key, holder in spec["allocations"].items():
            assert base + int(key) not in merged
            merged[base + int(key)] = holder
    return merged


def add(
    shim: Path,
    nodes: SimulatedNodes,
    node: str,
    config: dict[str, Any],
    pod: str,
    *,
    container: str | None = None,
    ifname: str = "net1",
    extra_args: str = "",
    command: str = "ADD",
) -> Outcome:
    args = pod_args("default", pod, uid=f"uid-{pod}")
    if extra_args:
        args = f"{args};{extra_args}"
    return invoke(
        shim,
        command,
        config,
        container_id=container or f"ctr-{pod}",
        ifname=ifname,
        netns=f"/var/run/netns/{pod}",
        args=args,
        env=nodes[node].environment(),
    )


def test_add_returns_lowest_free_address_and_records_the_allocation(
    shim: Path, node_a: SimulatedNodes, control_plane: ControlPlane, namespace: str
) -> None:
    config = network({"type": "whereabouts", "range": "192.168.50.0/24", "gateway": "192.168.50.1"})
    first = add(shim, node_a, "node-a", config, "web-0")
    second = add(shim, node_a, "node-a", config, "web-1")
    assert first.ok, first.stdout
    assert first.output == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "192.168.50.2/24", "gateway": "192.168.50.1"}],
    }
    assert second.addresses() == ["192.168.50.3/24"]
    spec = pools(control_plane, namespace)["192.168.50.0-24"]
    assert spec["range"] == "192.168.50.0/24"
    assert spec["allocations"] == {
        "2": {
            "id": "ctr-web-0",
            "podref": "default/web-0",
            "ifname": "net1",
            "node": "node-a",
            "poduid": "uid-web-0",
        },
        "3": {
            "id": "ctr-web-1",
            "podref": "default/web-1",
            "ifname": "net1",
            "node": "node-a",
            "poduid": "uid-web-1",
        },
    }
    assert set(reservations(control_plane, namespace)) == {"192.168.50.2", "192.168.50.3"}


def test_add_is_idempotent_and_late_del_of_old_sandbox_keeps_the_address(
    shim: Path, node_a: SimulatedNodes, control_plane: ControlPlane, namespace: str
) -> None:
    config = network({"type": "whereabouts", "range": "10.60.0.0/24"})
    first = add(shim, node_a, "node-a", config, "db-0", container="sandbox-1")
    again = add(shim, node_a, "node-a", config, "db-0", container="sandbox-2")
    assert first.addresses() == again.addresses() == ["10.60.0.1/24"]
    allocation = pools(control_plane, namespace)["10.60.0.0-24"]["allocations"]["1"]
    assert allocation["id"] == "sandbox-2"
    late_del = add(shim, node_a, "node-a", config, "db-0", container="sandbox-1", command="DEL")
    assert late_del.ok, late_del.stdout
    assert "1" in pools(control_plane, namespace)["10.60.0.0-24"]["allocations"]
    real_del = add(shim, node_a, "node-a", config, "db-0", container="sandbox-2", command="DEL")
    assert real_del.ok, real_del.stdout
    assert pools(control_plane, namespace)["10.60.0.0-24"]["allocations"] == {}
    assert reservations(control_plane, namespace) == {}
    # DEL is idempotent and succeeds when nothing is held.
    assert add(shim, node_a, "node-a", config, "db-0", container="sandbox-2", command="DEL").ok


def test_dual_stack_ip_ranges_and_named_networks_are_independent(
    shim: Path, node_a: SimulatedNodes, control_plane: ControlPlane, namespace: str
) -> None:
    ipam = {
        "type": "whereabouts",
        "ipRanges": [{"range": "10.70.0.0/24"}, {"range": "fd00:70::/120"}],
    }
    plain = add(shim, node_a, "node-a", network(ipam), "dual-0")
    named = add(
        shim,
        node_a,
        "node-a",
        network({**ipam, "network_name": "blue"}),
        "dual-1",
    )
    assert plain.addresses() == ["10.70.0.1/24", "fd00:70::1/120"]
    assert named.addresses() == ["10.70.0.1/24", "fd00:70::1/120"]
    assert set(pools(control_plane, namespace)) == {
        "10.70.0.0-24",
        "fd00-70---120",
        "blue-10.70.0.0-24",
        "blue-fd00-70---120",
    }
    assert set(reservations(control_plane, namespace)) == {
        "10.70.0.1",
        "fd00-70--1",
        "blue-10.70.0.1",
        "blue-fd00-70--1",
    }


def test_requested_address_is_honoured_and_refused_when_taken(
    shim: Path, node_a: SimulatedNodes, control_plane: ControlPlane, namespace: str
) -> None:
    config = network({"type": "whereabouts", "range": "10.80.0.0/24"})
    asked = add(shim, node_a, "node-a", config, "fixed-0", extra_args="IP=10.80.0.42")
    assert asked.addresses() == ["10.80.0.42/24"]
    with_runtime_config = dict(config, runtimeConfig={"ips": ["10.80.0.43/24"]})
    assert add(shim, node_a, "node-a", with_runtime_config, "fixed-1").addresses() == [
        "10.80.0.43/24"
    ]
    taken = add(shim, node_a, "node-a", config, "fixed-2", extra_args="IP=10.80.0.42")
    assert taken.code == 101, taken.stdout
    assert "10.80.0.42" in taken.output["msg"] if taken.output else False
    outside = add(shim, node_a, "node-a", config, "fixed-3", extra_args="IP=10.99.0.1")
    assert outside.code == 102, outside.stdout
    assert sorted(pools(control_plane, namespace)["10.80.0.0-24"]["allocations"]) == ["42", "43"]


def test_overlapping_ranges_never_share_an_address(
    shim: Path, node_a: SimulatedNodes, control_plane: ControlPlane, namespace: str
) -> None:
    wide = network({"type": "whereabouts", "range": "10.90.0.0/24"})
    narrow = network({"type": "whereabouts", "range": "10.90.0.0/28"})
    assert add(shim, node_a, "node-a", wide, "wide-0").addresses() == ["10.90.0.1/24"]
    # 10.90.0.1 is free in the /28's own pool but reserved cluster-wide.
    assert add(shim, node_a, "node-a", narrow, "narrow-0").addresses() == ["10.90.0.2/28"]
    no_overlap_check = network(
        {"type": "whereabouts", "range": "10.90.0.0/29", "enable_overlapping_ranges": False}
    )
    assert add(shim, node_a, "node-a", no_overlap_check, "loose-0").addresses() == ["10.90.0.1/29"]
    found = pools(control_plane, namespace)
    assert found["10.90.0.0-28"]["allocations"].keys() == {"2"}


def test_multi_range_add_is_all_or_nothing(
    shim: Path, node_a: SimulatedNodes, control_plane: ControlPlane, namespace: str
) -> None:
    # The second range (a /30 with 2 usable addresses) fills up first.
    ipam = {
        "type": "whereabouts",
        "ipRanges": [{"range": "10.91.0.0/24"}, {"range": "10.92.0.0/30"}],
    }
    results = [add(shim, node_a, "node-a", network(ipam), f"multi-{i}") for i in range(3)]
    assert [r.ok for r in results] == [True, True, False]
    assert results[2].code == 100
    found = pools(control_plane, namespace)
    assert sorted(found["10.91.0.0-24"]["allocations"]) == ["1", "2"]
    assert sorted(found["10.92.0.0-30"]["allocations"]) == ["1", "2"]
    assert "10.91.0.3" not in reservations(control_plane, namespace)


def test_go_written_pool_is_honoured(
    shim: Path, node_a: SimulatedNodes, control_plane: ControlPlane, namespace: str
) -> None:
    go_pool = {
        "apiVersion": "whereabouts.cni.cncf.io/v1alpha1",
        "kind": "IPPool",
        "metadata": {
            "name": "172.30.0.0-24",
            "namespace": namespace,
            "labels": {"team": "storage"},
            "annotations": {"owner": "platform"},
        },
        "spec": {
            "range": "172.30.0.0/24",
            "allocations": {
                "1": {
                    "id": "go-ctr-1",
                    "podref": "default/legacy-0",
                    "ifname": "net1",
                    "ipamclaimref": "default/legacy-0-claim",
                },
                "2": {"id": "go-ctr-2", "podref": "default/legacy-1", "ifname": "net1"},
            },
        },
    }
    control_plane.kubectl("create", "-f", "-", input_text=json.dumps(go_pool))
    config = network({"type": "whereabouts", "range": "172.30.0.0/24"})
    fresh = add(shim, node_a, "node-a", config, "newcomer")
    assert fresh.addresses() == ["172.30.0.3/24"]
    existing = add(shim, node_a, "node-a", config, "legacy-1", container="go-ctr-2")
    assert existing.addresses() == ["172.30.0.2/24"]
    allocations = pools(control_plane, namespace)["172.30.0.0-24"]["allocations"]
    assert allocations["1"] == go_pool["spec"]["allocations"]["1"]  # type: ignore[index]
    assert allocations["3"]["podref"] == "default/newcomer"
    # Our writes replace the object: what others put in its metadata must survive.
    stored = json.loads(
        control_plane.kubectl(
            "get", "ippool", "-n", namespace, "172.30.0.0-24", "-o", "json"
        ).stdout
    )
    assert stored["metadata"]["labels"] == {"team": "storage"}
    assert stored["metadata"]["annotations"] == {"owner": "platform"}


def test_exhaustion_is_exact_under_concurrency(
    shim: Path, node_a: SimulatedNodes, control_plane: ControlPlane, namespace: str
) -> None:
    config = network({"type": "whereabouts", "range": "10.93.0.0/29"})
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda i: add(shim, node_a, "node-a", config, f"ex-{i}"), range(8)))
    succeeded = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    assert len(succeeded) == 6
    assert [r.code for r in failed] == [100, 100]
    assert all("10.93.0.0/29" in (r.output or {}).get("msg", "") for r in failed)
    addresses = sorted(a for r in succeeded for a in r.addresses())
    assert addresses == [f"10.93.0.{i}/29" for i in range(1, 7)]
    allocations = pools(control_plane, namespace)["10.93.0.0-29"]["allocations"]
    assert sorted(allocations, key=int) == ["1", "2", "3", "4", "5", "6"]
    assert len(reservations(control_plane, namespace)) == 6


@pytest.mark.netns
def test_check_gc_and_status(
    shim: Path,
    node_a: SimulatedNodes,
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
) -> None:
    config = network({"type": "whereabouts", "range": "10.94.0.0/30"}, version="1.1.0")
    kept = add(shim, node_a, "node-a", config, "keep", container="ctr-keep")
    stale = add(shim, node_a, "node-a", config, "stale", container="ctr-stale")
    assert kept.ok and stale.ok
    netns = f"wbchk-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(
            ["ip", "-n", netns, "link", "add", "net1", "type", "veth", "peer", "name", "p1"],
            check=True,
        )

        def check(container: str) -> Outcome:
            return invoke(
                shim,
                "CHECK",
                config,
                container_id=container,
                ifname="net1",
                netns=f"/var/run/netns/{netns}",
                args=pod_args("default", "keep"),
                env=node_a["node-a"].environment(),
            )

        # Allocated, but not configured on the interface yet.
        assert check("ctr-keep").code == 103
        subprocess.run(
            ["ip", "-n", netns, "addr", "add", kept.addresses()[0], "dev", "net1"], check=True
        )
        passed = check("ctr-keep")
        assert passed.ok, passed.stdout
        assert check("ctr-nope").code == 3
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
    # The /30 is full now: STATUS says an ADD could not succeed.
    status = invoke(shim, "STATUS", config, env=node_a["node-a"].environment())
    assert status.code == 50, status.stdout
    assert "exhausted" in (status.output or {}).get("msg", "")
    gc_config = dict(
        config, **{"cni.dev/valid-attachments": [{"containerID": "ctr-keep", "ifname": "net1"}]}
    )
    # GC as after a node restart: a daemon spares the attachments whose ADD it began
    # itself in the last minutes (tests/daemon/test_gc_races_add.py), a new one has none.
    node_a.stop()
    with SimulatedNodes(control_plane, tmp_path / "again", ["node-a"], namespace) as again:
        gc = invoke(shim, "GC", gc_config, env=again["node-a"].environment())
        assert gc.ok, gc.stdout
        allocations = pools(control_plane, namespace)["10.94.0.0-30"]["allocations"]
        assert [a["id"] for a in allocations.values()] == ["ctr-keep"]
        assert set(reservations(control_plane, namespace)) == {"10.94.0.1"}
        assert invoke(shim, "STATUS", config, env=again["node-a"].environment()).ok


def test_gc_leaves_other_nodes_allocations_alone(
    shim: Path, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    config = network({"type": "whereabouts", "range": "10.95.0.0/24"}, version="1.1.0")
    with SimulatedNodes(control_plane, tmp_path, ["node-a", "node-b"], namespace) as nodes:
        assert add(shim, nodes, "node-a", config, "on-a").ok
        assert add(shim, nodes, "node-b", config, "on-b").ok
    # GC from node-a's next daemon (as after a restart: none of these ADDs are its own).
    with SimulatedNodes(control_plane, tmp_path / "again", ["node-a"], namespace) as nodes:
        gc_config = dict(config, **{"cni.dev/valid-attachments": []})
        assert invoke(shim, "GC", gc_config, env=nodes["node-a"].environment()).ok
    allocations = pools(control_plane, namespace)["10.95.0.0-24"]["allocations"]
    assert [a["node"] for a in allocations.values()] == ["node-b"]


def test_five_daemons_500_adds_dual_stack_unique_then_all_released(
    shim: Path, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """500 ADDs through the real shim from 5 daemons, 64 at a time.

    A /24 holds 253 addresses, so the 500 attachments are 250 on the default
    network and 250 on a second network_name over the same dual-stack ranges;
    every attachment gets one IPv4 and one IPv6 address.
    """
    ipam = {
        "type": "whereabouts",
        "ipRanges": [{"range": "10.96.0.0/24"}, {"range": "fd00:96::/64"}],
    }
    networks = {"": network(ipam), "second": network({**ipam, "network_name": "second"})}
    names = [f"node-{i}" for i in range(5)]
    jobs = [(net, f"p{i}") for net in networks for i in range(250)]

    def attach(job: tuple[str, str]) -> Outcome:
        net, pod = job
        node = names[int(pod[1:]) % len(names)]
        return add(shim, nodes, node, networks[net], f"{net or 'default'}-{pod}")

    with SimulatedNodes(control_plane, tmp_path, names, namespace) as nodes:
        with ThreadPoolExecutor(max_workers=64) as pool:
            outcomes = list(pool.map(attach, jobs))
        failures = [o.stdout for o in outcomes if not o.ok]
        assert failures == []
        by_network: dict[str, list[str]] = {net: [] for net in networks}
        for (net, _pod), outcome in zip(jobs, outcomes, strict=True):
            by_network[net].extend(outcome.addresses())
        for addresses in by_network.values():
            assert len(addresses) == 500
            assert len(set(addresses)) == 500
        found = pools(control_plane, namespace)
        v4 = found["10.96.0.0-24"]["allocations"]
        # The /64 is stored in blocks of 256 addresses (core.shards), one IPPool each.
        v6 = range_allocations(found, "fd00:96::/64")
        assert len(v4) == len(v6) == 250
        assert {str(ipaddress.ip_interface(a).ip) for a in by_network[""] if ":" in a} == {
            str(ipaddress.ip_address("fd00:96::") + offset) for offset in v6
        }
        expected_v4 = {
            str(int(ipaddress.ip_interface(a).ip) - int(ipaddress.ip_address("10.96.0.0")))
            for a in by_network[""]
            if "." in a
        }
        assert set(v4) == expected_v4
        assert {a["podref"] for a in v4.values()} == {f"default/default-p{i}" for i in range(250)}
        assert len(found["second-10.96.0.0-24"]["allocations"]) == 250
        assert len(reservations(control_plane, namespace)) == 1000

        def detach(job: tuple[str, str]) -> Outcome:
            net, pod = job
            node = names[int(pod[1:]) % len(names)]
            return add(shim, nodes, node, networks[net], f"{net or 'default'}-{pod}", command="DEL")

        with ThreadPoolExecutor(max_workers=64) as pool:
            deletions = list(pool.map(detach, jobs))
        assert [d.stdout for d in deletions if not d.ok] == []
    assert all(spec["allocations"] == {} for spec in pools(control_plane, namespace).values())
    assert reservations(control_plane, namespace) == {}


def test_large_range_is_stored_in_blocks_that_nodes_share_out(
    shim: Path, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """A /22 is stored in /26 blocks; Go's own entries in the whole-range object still count."""
    go_pool = {
        "apiVersion": "whereabouts.cni.cncf.io/v1alpha1",
        "kind": "IPPool",
        "metadata": {"name": "10.97.0.0-22", "namespace": namespace},
        "spec": {
            "range": "10.97.0.0/22",
            "allocations": {"1": {"id": "go-ctr", "podref": "default/go-pod", "ifname": "net1"}},
        },
    }
    control_plane.kubectl("create", "-f", "-", input_text=json.dumps(go_pool))
    config = network({"type": "whereabouts", "range": "10.97.0.0/22"})
    with SimulatedNodes(control_plane, tmp_path, ["node-a", "node-b"], namespace) as nodes:
        first = add(shim, nodes, "node-a", config, "blk-0")
        assert first.addresses() == ["10.97.0.2/22"]  # .1 is held by the Go entry
        with ThreadPoolExecutor(max_workers=16) as pool:
            outcomes = list(
                pool.map(
                    lambda i: add(shim, nodes, ["node-a", "node-b"][i % 2], config, f"blk-{i}"),
                    range(1, 41),
                )
            )
        assert [o.stdout for o in outcomes if not o.ok] == []
        addresses = [first.addresses()[0]] + [o.addresses()[0] for o in outcomes]
        assert len(set(addresses)) == 41
        assert "10.97.0.1/22" not in addresses
        # Idempotent across blocks: the same pod gets the same address back.
        again = add(shim, nodes, "node-b", config, "blk-7")
        assert again.addresses() == outcomes[6].addresses()
        found = pools(control_plane, namespace)
        blocks = {name: spec for name, spec in found.items() if name != "10.97.0.0-22"}
        assert blocks, found.keys()
        assert all(spec["range"].endswith("/26") for spec in blocks.values())
        annotated = json.loads(
            control_plane.kubectl("get", "ippools", "-n", namespace, "-o", "json").stdout
        )
        assert {
            item["metadata"].get("annotations", {}).get("whereabouts-py.io/range")
            for item in annotated["items"]
            if item["metadata"]["name"] != "10.97.0.0-22"
        } == {"10.97.0.0/22"}
        assert all(0 <= int(key) <= 63 for spec in blocks.values() for key in spec["allocations"])
        merged = range_allocations(blocks, "10.97.0.0/22")
        assert len(merged) == 41
        assert {f"{ipaddress.ip_address('10.97.0.0') + o}/22" for o in merged} == set(addresses)
        for i in range(41):
            node = ["node-a", "node-b"][i % 2] if i else "node-a"
            deleted = add(shim, nodes, node, config, f"blk-{i}", command="DEL")
            assert deleted.ok, deleted.stdout
        # The Go pod's DEL releases its entry from the whole-range object.
        go_del = invoke(
            shim,
            "DEL",
            config,
            container_id="go-ctr",
            ifname="net1",
            args=pod_args("default", "go-pod"),
            env=nodes["node-a"].environment(),
        )
        assert go_del.ok, go_del.stdout
    after = pools(control_plane, namespace)
    assert all(spec["allocations"] == {} for spec in after.values()), after
    assert reservations(control_plane, namespace) == {}


def test_flat_file_fills_what_the_nad_leaves_out_and_the_nad_wins(
    shim: Path, node_a: SimulatedNodes, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    flat = tmp_path / "whereabouts.conf"
    flat.write_text(
        json.dumps({"range": "10.98.0.0/24", "gateway": "10.98.0.1", "exclude": ["10.98.0.2/31"]})
    )
    from_file = network({"type": "whereabouts", "configuration_path": str(flat)})
    assert add(shim, node_a, "node-a", from_file, "flat-0").output == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.98.0.4/24", "gateway": "10.98.0.1"}],
    }
    nad_wins = network(
        {"type": "whereabouts", "configuration_path": str(flat), "range": "10.99.0.0/24"}
    )
    # The flat file's gateway and exclude lie outside the NAD's range: .1 is free.
    assert add(shim, node_a, "node-a", nad_wins, "flat-1").addresses() == ["10.99.0.1/24"]
    assert {"10.98.0.0-24", "10.99.0.0-24"} <= set(pools(control_plane, namespace))


def test_daemon_socket_is_private(node_a: SimulatedNodes) -> None:
    mode = node_a["node-a"].socket.stat().st_mode
    assert oct(mode & 0o777) == oct(0o600)
