"""`kubectl whereabouts` against a real control plane, run through kubectl itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from whereabouts_py_dev.controlplane import ControlPlane

POOL = {
    "apiVersion": "whereabouts.cni.cncf.io/v1alpha1",
    "kind": "IPPool",
    "metadata": {"name": "10.55.0.0-29"},
    "spec": {
        "range": "10.55.0.0/29",
        "allocations": {
            "1": {"id": "c-live", "podref": "@NS@/live", "ifname": "net1", "node": "node-a"},
            "2": {"id": "c-gone", "podref": "@NS@/gone", "ifname": "net1", "node": "node-b"},
        },
    },
}
RESERVATIONS = [
    ("10.55.0.1", {"containerid": "c-live", "podref": "@NS@/live", "ifname": "net1"}),
    ("10.55.0.2", {"containerid": "c-gone", "podref": "@NS@/gone", "ifname": "net1"}),
]


def create(plane: ControlPlane, namespace: str, obj: dict[str, Any]) -> None:
    text = json.dumps(obj).replace("@NS@", namespace)
    plane.kubectl("create", "-n", namespace, "-f", "-", input_text=text)


@pytest.fixture
def seeded(control_plane: ControlPlane, namespace: str) -> str:
    create(control_plane, namespace, POOL)
    for name, spec in RESERVATIONS:
        create(
            control_plane,
            namespace,
            {
                "apiVersion": "whereabouts.cni.cncf.io/v1alpha1",
                "kind": "OverlappingRangeIPReservation",
                "metadata": {"name": name},
                "spec": spec,
            },
        )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "live"},
        "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "pause"}]},
    }
    create(control_plane, namespace, pod)
    return namespace


def plugin(
    plane: ControlPlane, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run it as kubectl does: `kubectl whereabouts ...` finds kubectl-whereabouts on PATH."""
    env = plane.environment()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        [str(plane.binaries.kubectl), "whereabouts", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=60,
        check=False,
    )


def test_pools_table_and_json(control_plane: ControlPlane, seeded: str) -> None:
    table = plugin(control_plane, "-n", seeded, "pools")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.strip().splitlines()
    assert header.split() == ["POOL", "NETWORK", "RANGE", "ALLOCATED", "FREE", "USED"]
    assert row.split() == ["10.55.0.0-29", "10.55.0.0/29", "2", "4", "33.3%"]
    as_json = json.loads(plugin(control_plane, "-n", seeded, "-o", "json", "pools").stdout)
    assert as_json == [
        {
            "pool": "10.55.0.0-29",
            "network": "",
            "range": "10.55.0.0/29",
            "allocated": 2,
            "free": 4,
            "used": "33.3%",
            "objects": 1,
            "claimed": 0,
        }
    ]
    as_yaml = plugin(control_plane, "-n", seeded, "-o", "yaml", "pools").stdout
    assert "pool: 10.55.0.0-29" in as_yaml
    assert yaml.safe_load(as_yaml) == as_json
    wide = plugin(control_plane, "pools", "-n", seeded, "-o", "wide")
    assert wide.returncode == 0, wide.stderr
    header, row = wide.stdout.strip().splitlines()
    assert header.split() == ["POOL", "NETWORK", "RANGE", "ALLOCATED", "FREE", "USED", "OBJECTS"]
    assert row.split() == ["10.55.0.0-29", "10.55.0.0/29", "2", "4", "33.3%", "1"]


COMMANDS = [("pools",), ("show", "10.55.0.0-29"), ("leaks",), ("check",)]


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_flags_anywhere_as_with_kubectl(
    control_plane: ControlPlane, seeded: str, command: tuple[str, ...]
) -> None:
    before = plugin(control_plane, "-n", seeded, "-o", "json", *command)
    assert before.returncode == 0, before.stderr
    expected = json.loads(before.stdout)
    # check finds the seeded namespace consistent: an empty list; the others list rows.
    assert (expected == []) == (command[0] == "check"), expected
    spellings = [
        [*command, "-n", seeded, "-o", "json"],
        [*command, f"--namespace={seeded}", "--output=json"],
        [command[0], "-ojson", *command[1:], "--namespace", seeded],
        ["-o", "yaml", *command, "-o", "json", "-n", seeded],  # the later flag wins
    ]
    for args in spellings:
        run = plugin(control_plane, *args)
        assert run.returncode == 0, (args, run.stderr)
        assert json.loads(run.stdout) == expected, args
    as_yaml = plugin(control_plane, *command, "-n", seeded, "-o", "yaml")
    assert as_yaml.returncode == 0, as_yaml.stderr
    assert yaml.safe_load(as_yaml.stdout) == expected
    wide = plugin(control_plane, *command, "-o", "wide", "-n", seeded)
    assert wide.returncode == 0, wide.stderr
    table = plugin(control_plane, *command, "-n", seeded)
    assert len(wide.stdout.splitlines()[0].split()) >= len(table.stdout.splitlines()[0].split())


def test_kubeconfig_and_context_flags(
    control_plane: ControlPlane, seeded: str, tmp_path: Path
) -> None:
    """--kubeconfig beats $KUBECONFIG; --context picks a context other than the current one."""
    config = json.loads(control_plane.kubeconfig.read_text())
    good = config["contexts"][0]["name"]
    config["clusters"].append({"name": "nowhere", "cluster": {"server": "https://127.0.0.1:9"}})
    config["contexts"].append(
        {"name": "nowhere", "context": {"cluster": "nowhere", "user": config["users"][0]["name"]}}
    )
    config["current-context"] = "nowhere"
    two = tmp_path / "two-contexts"
    two.write_text(json.dumps(config))
    for args in (
        ["pools", "--kubeconfig", str(two), "--context", good],
        ["--kubeconfig", str(two), "--context", good, "pools"],
        [f"--context={good}", "pools", f"--kubeconfig={two}"],
    ):
        run = plugin(control_plane, *args, "-n", seeded, "-o", "json")
        assert run.returncode == 0, (args, run.stderr)
        assert [p["range"] for p in json.loads(run.stdout)] == ["10.55.0.0/29"]
    current = plugin(control_plane, "pools", "--kubeconfig", str(two), "-n", seeded)
    assert current.returncode == 1
    assert "Traceback" not in current.stderr
    unknown = plugin(control_plane, "pools", "--kubeconfig", str(two), "--context", "gone")
    assert unknown.returncode == 1
    assert "gone" in unknown.stderr
    assert "Traceback" not in unknown.stderr


@pytest.mark.parametrize(
    ("command", "own"),
    [
        ("pools", []),
        ("show", ["pool"]),
        ("leaks", []),
        ("release", ["address", "--network", "--yes"]),
        ("check", []),
    ],
)
def test_help_of_each_command_lists_its_options(
    control_plane: ControlPlane, command: str, own: list[str]
) -> None:
    shown = plugin(control_plane, command, "--help")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"usage: kubectl whereabouts {command}")
    for option in ["--kubeconfig", "--context", "--namespace", "--output", *own]:
        assert option in shown.stdout, (command, option)
    assert "json, yaml" in shown.stdout
    bad = plugin(control_plane, command, "-o", "xml")
    assert bad.returncode == 2
    assert "invalid choice: 'xml'" in bad.stderr


def test_show_and_unknown_pool(control_plane: ControlPlane, seeded: str) -> None:
    shown = json.loads(
        plugin(control_plane, "-n", seeded, "-o", "json", "show", "10.55.0.0-29").stdout
    )
    assert [(r["address"], r["pod"], r["node"]) for r in shown] == [
        ("10.55.0.1", f"{seeded}/live", "node-a"),
        ("10.55.0.2", f"{seeded}/gone", "node-b"),
    ]
    unknown = plugin(control_plane, "-n", seeded, "show", "10.99.0.0-24")
    assert unknown.returncode == 1
    assert "no pool named 10.99.0.0-24" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_leaks_lists_only_the_gone_pod(control_plane: ControlPlane, seeded: str) -> None:
    leaks = json.loads(plugin(control_plane, "-n", seeded, "-o", "json", "leaks").stdout)
    assert [(r["address"], r["reason"]) for r in leaks] == [("10.55.0.2", "pod_deleted")]


def test_release_asks_then_releases(control_plane: ControlPlane, seeded: str) -> None:
    declined = plugin(control_plane, "-n", seeded, "release", "10.55.0.2", stdin="n\n")
    assert declined.returncode == 1
    assert "nothing released" in declined.stderr
    released = plugin(control_plane, "-n", seeded, "release", "10.55.0.2", "--yes")
    assert released.returncode == 0, released.stderr
    spec = json.loads(
        control_plane.kubectl("get", "ippool", "-n", seeded, "10.55.0.0-29", "-o", "json").stdout
    )["spec"]
    assert list(spec["allocations"]) == ["1"]
    names = control_plane.kubectl(
        "get", "overlappingrangeipreservations", "-n", seeded, "-o", "name"
    ).stdout.split()
    assert names == ["overlappingrangeipreservation.whereabouts.cni.cncf.io/10.55.0.1"]
    as_json = plugin(control_plane, "release", "10.55.0.1", "-y", "-o", "json", "-n", seeded)
    assert as_json.returncode == 0, as_json.stderr
    assert [(r["address"], r["pod"]) for r in json.loads(as_json.stdout)] == [
        ("10.55.0.1", f"{seeded}/live")
    ]
    assert "released 10.55.0.1" in as_json.stderr
    missing = plugin(control_plane, "-n", seeded, "release", "10.55.0.2", "--yes")
    assert missing.returncode == 1
    assert "10.55.0.2 is not allocated" in missing.stderr
    bad = plugin(control_plane, "-n", seeded, "release", "not-an-ip", "--yes")
    assert bad.returncode == 1
    assert "not-an-ip is not an IP address" in bad.stderr


def test_check_finds_orphans_and_double_holders(control_plane: ControlPlane, seeded: str) -> None:
    clean = plugin(control_plane, "-n", seeded, "check")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    # A second pool over the same addresses holding .1 for another pod, and an orphan.
    overlapping = {
        "apiVersion": "whereabouts.cni.cncf.io/v1alpha1",
        "kind": "IPPool",
        "metadata": {"name": "10.55.0.0-30"},
        "spec": {
            "range": "10.55.0.0/30",
            "allocations": {"1": {"id": "c-x", "podref": "@NS@/intruder", "ifname": "net1"}},
        },
    }
    create(control_plane, seeded, overlapping)
    create(
        control_plane,
        seeded,
        {
            "apiVersion": "whereabouts.cni.cncf.io/v1alpha1",
            "kind": "OverlappingRangeIPReservation",
            "metadata": {"name": "10.55.0.5"},
            "spec": {"containerid": "c-y", "podref": "@NS@/ghost", "ifname": "net1"},
        },
    )
    found = plugin(control_plane, "-n", seeded, "-o", "json", "check")
    assert found.returncode == 1
    problems = {(p["problem"], p["object"]) for p in json.loads(found.stdout)}
    assert ("address held twice", "10.55.0.1") in problems
    assert ("reservation without pool entry", "10.55.0.5") in problems
    assert ("reservation held by another attachment", "10.55.0.1") in problems
