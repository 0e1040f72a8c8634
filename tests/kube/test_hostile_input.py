"""Hostile input through the real shim and a real daemon on a real control plane.

Object names built from input never reach another object; keys passed through
are checked before anything is allocated; a DEL releases whatever its
ADD-only keys hold; CHECK never creates a namespace; the daemon's socket stays
responsive under idle floods and validates every request itself.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from whereabouts_py.cni import wire
from whereabouts_py.cni.install import install_cni
from whereabouts_py.errors import InvalidNameError, StoreError, WhereaboutsError
from whereabouts_py.store.kube import KubeStore, PoolSnapshot, connect
from whereabouts_py_dev.controlplane import ControlPlane, running
from whereabouts_py_dev.nodes import NodeDaemon, SimulatedNodes
from whereabouts_py_dev.runtime import Outcome, invoke, pod_args

pytestmark = pytest.mark.kube

NAMESPACE = "hostile-input"


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_cni(tmp_path_factory.mktemp("cni-bin"))


@pytest.fixture(scope="module")
def node(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeDaemon]:
    control_plane.kubectl("create", "namespace", NAMESPACE)
    directory = Path("/tmp") / f"wpy-hostile-{uuid.uuid4().hex[:6]}"
    with SimulatedNodes(control_plane, directory, ["node-h"], NAMESPACE) as nodes:
        yield nodes["node-h"]
    for leftover in directory.glob("*"):
        leftover.unlink()
    directory.rmdir()


def network(ipam: dict[str, Any], name: str = "hostile") -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": name, "type": "macvlan", "ipam": ipam}


def call(
    shim: Path,
    node: NodeDaemon,
    command: str,
    config: dict[str, Any] | str,
    pod: str,
    *,
    netns: str = "/var/run/netns/x",
) -> Outcome:
    return invoke(
        shim,
        command,
        config,
        container_id=f"ctr-{pod}",
        ifname="net1",
        netns=netns,
        args=pod_args("default", pod),
        env=node.environment(),
    )


def objects(plane: ControlPlane) -> dict[str, tuple[str, str]]:
    """Every IPPool and reservation: name -> (resourceVersion, spec as JSON)."""
    listed = plane.kubectl(
        "get", "ippools,overlappingrangeipreservations", "-n", NAMESPACE, "-o", "json"
    ).stdout
    return {
        f"{item['kind']}/{item['metadata']['name']}": (
            item["metadata"]["resourceVersion"],
            json.dumps(item["spec"], sort_keys=True),
        )
        for item in json.loads(listed)["items"]
    }


def no_traceback(node: NodeDaemon) -> None:
    assert node.process.poll() is None, "the daemon died"
    assert "Traceback" not in node.log.read_text(errors="replace")


def raw_request(node: NodeDaemon, payload: bytes, timeout_s: float = 20.0) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(node.socket))
        sock.sendall(payload)
        answer = wire.decode(wire.read_line(sock))
    return answer


# --- 1. names ------------------------------------------------------------------------------
def test_a_network_name_cannot_reach_another_pool(
    shim: Path, node: NodeDaemon, control_plane: ControlPlane
) -> None:
    victim = network({"type": "whereabouts", "range": "10.50.0.0/24"}, "victim")
    first = call(shim, node, "ADD", victim, "victim-1")
    assert first.addresses() == ["10.50.0.1/24"], first.stdout
    before = objects(control_plane)
    assert "IPPool/10.50.0.0-24" in before
    hostile = network(
        {"type": "whereabouts", "range": "10.60.0.0/24", "network_name": "x/../10.50.0.0-24?"}
    )
    answer = call(shim, node, "ADD", hostile, "intruder")
    assert answer.code == 7, answer.stdout
    assert "network_name=x/../10.50.0.0-24?" in (answer.output or {})["msg"]
    assert objects(control_plane) == before
    second = call(shim, node, "ADD", victim, "victim-2")
    assert second.addresses() == ["10.50.0.2/24"], second.stdout
    for pod in ("victim-1", "victim-2"):
        assert call(shim, node, "DEL", victim, pod).ok
    no_traceback(node)


@pytest.mark.parametrize("network_name", ["Blue", "blue net", "blue_net", "b" * 250])
def test_invalid_network_names_are_config_errors_not_api_errors(
    shim: Path, node: NodeDaemon, control_plane: ControlPlane, network_name: str
) -> None:
    before = objects(control_plane)
    config = network({"type": "whereabouts", "range": "10.61.0.0/24", "network_name": network_name})
    answer = call(shim, node, "ADD", config, "named")
    assert answer.code == 7, answer.stdout
    assert "network_name=" in (answer.output or {})["msg"]
    assert "422" not in answer.stdout
    assert objects(control_plane) == before


# --- 3. keys passed through ------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes",
    [
        {"routes": [1]},
        {"routes": [None]},
        {"routes": "0.0.0.0/0"},
        {"routes": ["0.0.0.0/0"]},
        {"routes": [[{"dst": "0.0.0.0/0"}]]},
        {"routes": [{"dst": "0.0.0.0/0", "gw": 7}]},
        {"dns": {"nameservers": "10.0.0.10"}},
        {"addresses": ["10.9.0.1/24"]},
        {"addresses": [{"address": "not-a-cidr"}]},
        {"ipRanges": [{"range": "10.63.0.0/24", "range_start": "foo"}]},
        {"ipRanges": [{"range": "10.63.0.0/24", "range_end": "010.63.0.9"}]},
    ],
    ids=json.dumps,
)
def test_invalid_keys_are_refused_before_anything_is_allocated(
    shim: Path, node: NodeDaemon, control_plane: ControlPlane, changes: dict[str, Any]
) -> None:
    before = objects(control_plane)
    config = network({"type": "whereabouts", "range": "10.62.0.0/24", **changes})
    answer = call(shim, node, "ADD", config, "passthrough")
    assert answer.code == 7, answer.stdout
    key = next(iter(changes))
    assert f"{key}" in (answer.output or {})["msg"]
    assert objects(control_plane) == before
    no_traceback(node)


def test_leading_zeroes_in_the_top_level_range_are_the_same_range(
    shim: Path, node: NodeDaemon, control_plane: ControlPlane
) -> None:
    plain = network({"type": "whereabouts", "range": "10.64.1.0/24"})
    sloppy = network(
        {"type": "whereabouts", "range": "0010.064.001.0/24", "range_start": "10.64.1.005"}
    )
    first = call(shim, node, "ADD", plain, "zero-1")
    assert first.addresses() == ["10.64.1.1/24"], first.stdout
    second = call(shim, node, "ADD", sloppy, "zero-2")
    assert second.addresses() == ["10.64.1.5/24"], second.stdout
    assert "IPPool/10.64.1.0-24" in objects(control_plane)
    assert call(shim, node, "DEL", plain, "zero-1").ok
    assert call(shim, node, "DEL", sloppy, "zero-2").ok


# --- 4. internal errors ------------------------------------------------------------------------
def test_long_configuration_path_fails_add_but_del_still_releases(
    shim: Path, node: NodeDaemon, control_plane: ControlPlane
) -> None:
    good = network({"type": "whereabouts", "range": "10.65.0.0/24"})
    bad_path = {**good["ipam"], "configuration_path": "/etc/" + "p" * 300}
    refused = call(shim, node, "ADD", network(bad_path), "long-path")
    assert refused.code == 7, refused.stdout
    assert "configuration_path" in (refused.output or {})["msg"]
    added = call(shim, node, "ADD", good, "long-path")
    assert added.addresses() == ["10.65.0.1/24"], added.stdout
    # The DEL the runtime sends with the same broken keys still releases.
    broken = {**bad_path, "routes": [1], "log_level": "loud"}
    deleted = call(shim, node, "DEL", network(broken), "long-path")
    assert deleted.ok, deleted.stdout
    pools = control_plane.specs("ippools", NAMESPACE)
    assert pools["10.65.0.0-24"]["allocations"] == {}
    no_traceback(node)


def test_deep_json_on_the_socket_is_a_decode_error_without_traceback(node: NodeDaemon) -> None:
    for depth in (1000, 50_000):
        payload = b'{"command": "ADD", "config": ' + b"[" * depth + b"]" * depth + b"}\n"
        answer = raw_request(node, payload)
        assert answer["error"]["code"] == 6, answer
    no_traceback(node)


# --- 5. size limits -----------------------------------------------------------------------------
def test_stdin_over_the_limit_is_permanent(shim: Path, node: NodeDaemon) -> None:
    config = network({"type": "whereabouts", "range": "10.66.0.0/24"})
    config["padding"] = "z" * (wire.MAX_STDIN_BYTES + 1)
    answer = call(shim, node, "ADD", config, "big")
    assert answer.code == 7, answer.stdout[:500]
    assert "4 MiB" in (answer.output or {})["msg"]


def test_request_line_over_the_limit_is_refused_naming_it(node: NodeDaemon) -> None:
    payload = b'{"command": "ADD", "pad": "' + b"p" * (wire.MAX_MESSAGE_BYTES + 10) + b'"}\n'
    answer = raw_request(node, payload)
    assert answer["error"]["code"] == 7, answer
    assert str(wire.MAX_MESSAGE_BYTES) in answer["error"]["msg"]
    no_traceback(node)


# --- 6. CHECK never creates a namespace ----------------------------------------------------------
def test_check_with_a_missing_netns_creates_nothing(shim: Path, node: NodeDaemon) -> None:
    config = network({"type": "whereabouts", "range": "10.67.0.0/24"})
    assert call(shim, node, "ADD", config, "checked").ok
    missing = f"/var/run/netns/wpy-missing-{uuid.uuid4().hex[:8]}"
    try:
        checked = call(shim, node, "CHECK", config, "checked", netns=missing)
        assert checked.code == 3, checked.stdout
        assert missing in (checked.output or {})["msg"]
        assert not os.path.exists(missing)
        with open("/proc/self/mountinfo") as mounts:
            assert missing not in mounts.read()
    finally:
        if os.path.exists(missing):  # what the old code left behind
            os.system(f"umount {missing} 2>/dev/null; rm -f {missing}")
        assert call(shim, node, "DEL", config, "checked").ok


# --- 7. the daemon's socket ------------------------------------------------------------------
def add_latency(shim: Path, node: NodeDaemon, pod: str) -> float:
    config = network({"type": "whereabouts", "range": "10.68.0.0/24"})
    started = time.monotonic()
    added = call(shim, node, "ADD", config, pod)
    elapsed = time.monotonic() - started
    assert added.ok, added.stdout
    assert call(shim, node, "DEL", config, pod).ok
    return elapsed


def open_idle(node: NodeDaemon, count: int) -> list[socket.socket]:
    idle = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(node.socket))
        idle.append(sock)
    return idle


def test_idle_connections_do_not_stall_the_daemon(shim: Path, node: NodeDaemon) -> None:
    add_latency(shim, node, "warm")
    idle = open_idle(node, 2000)
    try:
        # While they are open, a shim is still served (the oldest idle ones make room).
        assert add_latency(shim, node, "during-flood") < 5.0
    finally:
        for sock in idle:
            sock.close()
    assert add_latency(shim, node, "after-flood") < 5.0
    no_traceback(node)


def test_idle_connection_is_timed_out(node: NodeDaemon) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(node.socket))
        started = time.monotonic()
        sock.sendall(b'{"command": "ADD"')  # never finished
        answer = wire.decode(wire.read_line(sock))
        assert answer["error"]["code"] == 6, answer
        assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    ("fields", "code", "mentions"),
    [
        ({"containerID": {"id": "x"}}, 4, "CNI_CONTAINERID"),
        ({"containerID": "../../x"}, 4, "CNI_CONTAINERID"),
        ({"containerID": "c" * 1_000_000}, 4, "CNI_CONTAINERID"),
        ({"ifname": "a/b"}, 4, "CNI_IFNAME"),
        ({"ifname": ["net1"]}, 4, "CNI_IFNAME"),
        ({"netns": "/n" * 600_000}, 4, "CNI_NETNS"),
        ({"args": "K8S_POD_NAMESPACE=../x;K8S_POD_NAME=p"}, 4, "K8S_POD_NAMESPACE"),
        ({"args": "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=" + "p" * 1_000_000}, 4, "CNI_ARGS"),
        ({"command": "VERSION"}, 4, "CNI_COMMAND"),
        ({"command": ["ADD"]}, 4, "CNI_COMMAND"),
        ({"config": "not an object"}, 6, "configuration"),
    ],
    ids=lambda value: str(value)[:40],
)
def test_the_daemon_validates_requests_itself(
    node: NodeDaemon,
    control_plane: ControlPlane,
    fields: dict[str, Any],
    code: int,
    mentions: str,
) -> None:
    before = objects(control_plane)
    request: dict[str, Any] = {
        "command": "ADD",
        "containerID": "ctr-raw",
        "netns": "/var/run/netns/x",
        "ifname": "net1",
        "args": pod_args("default", "raw"),
        "path": "",
        "config": network({"type": "whereabouts", "range": "10.69.0.0/24"}),
        **fields,
    }
    answer = raw_request(node, wire.encode(request))
    assert answer["error"]["code"] == code, answer
    assert mentions in answer["error"]["msg"] + answer["error"].get("details", "")
    assert len(answer["error"]["msg"]) < 600
    assert objects(control_plane) == before
    no_traceback(node)


# --- 5. a 403 from an apiserver that is starting ------------------------------------------------
def test_a_real_403_is_a_permissions_error_naming_the_right(control_plane: ControlPlane) -> None:
    store = KubeStore(connect(str(control_plane.kubeconfig_for("nobody"))), NAMESPACE)
    with pytest.raises(StoreError) as raised:
        store.get_pool("10.70.0.0-24", "10.70.0.0/24")
    assert raised.value.code == 5
    assert "forbidden" in raised.value.msg
    assert 'cannot get resource "ippools"' in raised.value.msg
    assert "grant" in raised.value.details


def test_a_403_while_the_apiserver_starts_is_try_again(tmp_path: Path) -> None:
    """Reads and watches alike: a request the starting apiserver refuses is "try again"."""
    with running(tmp_path / "cp") as plane:
        namespace = "starting"
        plane.kubectl("create", "namespace", namespace)
        plane.kubectl(
            "create", "role", "read-pools", "-n", namespace, "--verb=get,list,watch",
            "--resource=ippools.whereabouts.cni.cncf.io",
        )  # fmt: skip
        plane.kubectl(
            "create", "rolebinding", "read-pools", "-n", namespace, "--role=read-pools",
            "--user=system:serviceaccount:kube-system:whereabouts-daemon",
        )  # fmt: skip
        store = KubeStore(connect(str(plane.kubeconfig_for("daemon"))), namespace)
        assert store.get_pool("x", "10.0.0.0/24").resource_version is None
        reads: Counter[tuple[int, str]] = Counter()
        watches: Counter[tuple[int, str]] = Counter()
        for _restart in range(8):
            plane.stop_apiserver()
            started = threading.Event()
            starter = threading.Thread(target=start_and_tell, args=(plane, started))
            starter.start()
            while not started.is_set():
                for seen, attempt in ((reads, _read), (watches, _watch)):
                    try:
                        attempt(store)
                    except WhereaboutsError as error:
                        seen[error.code, error.msg.split(": ", 1)[1]] += 1
            starter.join()
            if all(starting(seen) for seen in (reads, watches)):
                break
        # Refused connections and the 403s of the starting apiserver: all "try again".
        assert {code for code, _msg in reads} == {11}, reads
        assert {code for code, _msg in watches} == {11}, watches
        assert starting(reads), reads
        assert starting(watches), watches


def starting(seen: Counter[tuple[int, str]]) -> bool:
    return any("still starting" in msg for _code, msg in seen)


def _read(store: KubeStore) -> None:
    store.get_pool("x", "10.0.0.0/24")


def _watch(store: KubeStore) -> None:
    for _mark in store.watch_pool("x", timeout_s=1.0):
        pass


def start_and_tell(plane: ControlPlane, started: threading.Event) -> None:
    plane.start_apiserver()
    started.set()


def test_the_store_refuses_names_kubernetes_would_refuse(control_plane: ControlPlane) -> None:
    store = KubeStore(connect(str(control_plane.kubeconfig)), NAMESPACE)
    before = objects(control_plane)
    for name in ("x/../10.50.0.0-24", "10.50.0.0-24?x", "Upper", "", "a" * 254):
        with pytest.raises(InvalidNameError) as raised:
            store.get_pool(name, "10.50.0.0/24")
        assert raised.value.code == 7
        with pytest.raises(InvalidNameError):
            store.write_pool(PoolSnapshot(name, "10.50.0.0/24", {}, None), {})
        with pytest.raises(InvalidNameError):
            store.get_reservation(name)
        with pytest.raises(InvalidNameError):
            store.get_lease(name)
    with pytest.raises(InvalidNameError):
        store.get_pod("../kube-system", "p")
    assert objects(control_plane) == before
