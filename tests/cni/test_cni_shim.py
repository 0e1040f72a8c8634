"""The installed CNI shim, run as a real process against a daemon stand-in."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from whereabouts_py.cni import wire

SUPPORTED = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


# --- VERSION ---------------------------------------------------------------------------


@pytest.mark.parametrize("requested", SUPPORTED)
def test_version_answers_locally_in_the_requested_version(run: Any, requested: str) -> None:
    answer = run("VERSION", {"cniVersion": requested}, socket_path="/nonexistent.sock")
    assert answer.returncode == 0
    assert answer.answer == {"cniVersion": requested, "supportedVersions": SUPPORTED}


@pytest.mark.parametrize("stdin", [b"", b"not json", b'{"cniVersion": "9.9.9"}', b"[]"])
def test_version_is_a_probe_that_always_answers(run: Any, stdin: bytes) -> None:
    answer = run("VERSION", stdin)
    assert answer.returncode == 0
    assert answer.answer == {"cniVersion": "1.1.0", "supportedVersions": SUPPORTED}


# --- errors the shim finds itself --------------------------------------------------------


def _without(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != key}


ERROR_TABLE = [
    # (case, command, stdin (None: the network config), env changes, code, text in msg)
    ("missing CNI_COMMAND", None, None, {}, 4, "CNI_COMMAND"),
    ("unknown verb", "FROB", None, {}, 4, "CNI_COMMAND=FROB"),
    ("empty verb", "", None, {}, 4, "CNI_COMMAND"),
    ("stdin not JSON", "ADD", b"{nope", {}, 6, "not valid JSON"),
    ("stdin empty", "ADD", b"", {}, 6, "not valid JSON"),
    ("stdin a list", "ADD", b"[1, 2]", {}, 6, "not a JSON object"),
    ("stdin not UTF-8", "ADD", b"\xff\xfe{", {}, 6, "not valid JSON"),
    ("unsupported cniVersion", "ADD", "9.9.9", {}, 1, "'9.9.9'"),
    ("0.2.0 cniVersion", "ADD", "0.2.0", {}, 1, "'0.2.0'"),
    ("missing cniVersion", "ADD", "-", {}, 1, "no cniVersion"),
    ("missing ipam", "ADD", "no-ipam", {}, 7, "ipam"),
    ("ipam not an object", "ADD", "ipam-string", {}, 7, "ipam"),
    ("wrong ipam.type", "ADD", "host-local", {}, 7, "ipam.type=host-local"),
    ("missing CNI_CONTAINERID on ADD", "ADD", None, {"CNI_CONTAINERID": ""}, 4, "CNI_CONTAINERID"),
    ("missing CNI_IFNAME on DEL", "DEL", None, {"CNI_IFNAME": ""}, 4, "CNI_IFNAME"),
    ("missing CNI_NETNS on ADD", "ADD", None, {"CNI_NETNS": ""}, 4, "CNI_NETNS"),
    ("missing CNI_NETNS on CHECK", "CHECK", None, {"CNI_NETNS": ""}, 4, "CNI_NETNS"),
    ("bad container ID", "ADD", None, {"CNI_CONTAINERID": "-x;y"}, 4, "CNI_CONTAINERID=-x;y"),
    ("ifname too long", "ADD", None, {"CNI_IFNAME": "a" * 16}, 4, "CNI_IFNAME="),
    ("ifname with slash", "ADD", None, {"CNI_IFNAME": "a/b"}, 4, "CNI_IFNAME=a/b"),
    ("bad timeout", "ADD", None, {"WHEREABOUTS_PY_TIMEOUT": "soon"}, 4, "WHEREABOUTS_PY_TIMEOUT"),
    ("GC without valid-attachments", "GC", None, {}, 7, "cni.dev/valid-attachments"),
    ("daemon_socket not a string", "ADD", "socket-number", {}, 7, "ipam.daemon_socket"),
]


@pytest.mark.parametrize("case", ERROR_TABLE, ids=[case[0] for case in ERROR_TABLE])
def test_error_table(
    run: Any,
    daemon: Any,
    network_config: dict[str, Any],
    attachment_env: dict[str, str],
    case: tuple[str, str | None, Any, dict[str, str], int, str],
) -> None:
    _, command, stdin, env, code, text = case
    config = network_config
    if stdin in ("9.9.9", "0.2.0"):
        config["cniVersion"] = stdin
    elif stdin == "-":
        del config["cniVersion"]
    elif stdin == "no-ipam":
        del config["ipam"]
    elif stdin == "ipam-string":
        config["ipam"] = "whereabouts"
    elif stdin == "host-local":
        config["ipam"]["type"] = "host-local"
    elif stdin == "socket-number":
        config["ipam"]["daemon_socket"] = 42
    data = stdin if isinstance(stdin, bytes) else config
    # The environment's socket wins over ipam.daemon_socket, which is then not even read.
    socket_path = None if stdin == "socket-number" else daemon.path
    answer = run(command, data, attachment_env | env, socket_path=socket_path)

    assert answer.returncode == 1
    assert answer.answer["code"] == code
    assert text in answer.answer["msg"]
    assert answer.answer["cniVersion"] in SUPPORTED
    assert daemon.requests == [], "a request the shim rejects must not reach the daemon"


def test_error_carries_the_requested_cni_version(
    run: Any, daemon: Any, network_config: dict[str, Any], attachment_env: dict[str, str]
) -> None:
    network_config["cniVersion"] = "0.4.0"
    network_config["ipam"]["type"] = "dhcp"
    answer = run("ADD", network_config, attachment_env, socket_path=daemon.path)
    assert answer.answer["cniVersion"] == "0.4.0"
    assert answer.answer["code"] == 7


def test_daemon_error_is_passed_through(
    run: Any, daemon: Any, network_config: dict[str, Any], attachment_env: dict[str, str]
) -> None:
    daemon.answer_error(100, "no free address left in 192.168.2.0/24", "widen the range")
    answer = run("ADD", network_config, attachment_env, socket_path=daemon.path)
    assert answer.returncode == 1
    assert answer.answer == {
        "cniVersion": "1.0.0",
        "code": 100,
        "msg": "no free address left in 192.168.2.0/24",
        "details": "widen the range",
    }


def test_unexpected_failure_is_code_999_without_traceback(
    run: Any, daemon: Any, network_config: dict[str, Any], attachment_env: dict[str, str]
) -> None:
    daemon.answer = b'{"error": {"code": "not-a-number", "msg": "x"}}\n'
    answer = run("ADD", network_config, attachment_env, socket_path=daemon.path)
    assert answer.returncode == 1
    assert answer.answer["code"] == 999
    assert "ValueError" in answer.answer["msg"]


def test_malformed_daemon_answer_is_an_error_object(
    run: Any, daemon: Any, network_config: dict[str, Any], attachment_env: dict[str, str]
) -> None:
    daemon.answer = b"this is not json\n"
    answer = run("ADD", network_config, attachment_env, socket_path=daemon.path)
    assert answer.returncode == 1
    assert answer.answer["code"] == 6


# --- daemon unreachable or slow ----------------------------------------------------------


def test_add_with_no_daemon_is_try_again_naming_the_socket(
    run: Any, socket_dir: Path, network_config: dict[str, Any], attachment_env: dict[str, str]
) -> None:
    missing = str(socket_dir / "absent.sock")
    answer = run("ADD", network_config, attachment_env, socket_path=missing)
    assert answer.returncode == 1
    assert answer.answer["code"] == 11
    assert missing in answer.answer["msg"]
    assert answer.elapsed_s < 2


@pytest.mark.parametrize("command", ["DEL", "CHECK"])
def test_del_and_check_with_no_daemon_are_try_again(
    run: Any,
    socket_dir: Path,
    network_config: dict[str, Any],
    attachment_env: dict[str, str],
    command: str,
) -> None:
    missing = str(socket_dir / "absent.sock")
    answer = run(command, network_config, attachment_env, socket_path=missing)
    assert answer.answer["code"] == 11
    assert missing in answer.answer["msg"]


def test_status_with_no_daemon_is_not_available(
    run: Any, socket_dir: Path, network_config: dict[str, Any]
) -> None:
    missing = str(socket_dir / "absent.sock")
    answer = run("STATUS", network_config, socket_path=missing)
    assert answer.returncode == 1
    assert answer.answer["code"] == 50
    assert missing in answer.answer["msg"]
    assert answer.elapsed_s < 2


def test_socket_that_refuses_is_try_again(
    run: Any, socket_dir: Path, network_config: dict[str, Any], attachment_env: dict[str, str]
) -> None:
    stale = socket_dir / "stale.sock"
    stale.write_text("")  # a leftover file, nobody listening
    answer = run("ADD", network_config, attachment_env, socket_path=str(stale))
    assert answer.answer["code"] == 11


def test_daemon_that_never_answers_is_try_again_after_the_timeout(
    run: Any, daemon: Any, network_config: dict[str, Any], attachment_env: dict[str, str]
) -> None:
    daemon.silent = True
    env = attachment_env | {"WHEREABOUTS_PY_TIMEOUT": "0.5"}
    answer = run("ADD", network_config, env, socket_path=daemon.path)
    assert answer.returncode == 1
    assert answer.answer["code"] == 11
    assert "0.5s" in answer.answer["msg"]
    assert 0.5 <= answer.elapsed_s < 2


def test_status_of_a_silent_daemon_is_not_available(
    run: Any, daemon: Any, network_config: dict[str, Any]
) -> None:
    daemon.silent = True
    answer = run(
        "STATUS", network_config, {"WHEREABOUTS_PY_TIMEOUT": "0.3"}, socket_path=daemon.path
    )
    assert answer.answer["code"] == 50


# --- what reaches the daemon -------------------------------------------------------------


def test_add_forwards_the_attachment_and_the_whole_config(
    run: Any, daemon: Any, network_config: dict[str, Any], attachment_env: dict[str, str]
) -> None:
    daemon.answer_result({"ips": [{"address": "192.168.2.2/24", "gateway": "192.168.2.1"}]})
    answer = run("ADD", network_config, attachment_env, socket_path=daemon.path)
    assert answer.returncode == 0, answer
    assert daemon.requests == [
        {
            "command": "ADD",
            "containerID": "c0ffee01",
            "netns": "/var/run/netns/pod-1",
            "ifname": "net1",
            "args": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-1",
            "path": "/opt/cni/bin",
            "config": network_config,
        }
    ]


def test_del_without_netns_succeeds_silently(
    run: Any, daemon: Any, network_config: dict[str, Any], attachment_env: dict[str, str]
) -> None:
    env = attachment_env | {"CNI_NETNS": ""}
    answer = run("DEL", network_config, env, socket_path=daemon.path)
    assert (answer.returncode, answer.stdout) == (0, "")
    assert daemon.requests[0]["command"] == "DEL"
    assert daemon.requests[0]["netns"] == ""


def test_check_success_prints_nothing(
    run: Any, daemon: Any, network_config: dict[str, Any], attachment_env: dict[str, str]
) -> None:
    network_config["prevResult"] = {"cniVersion": "1.0.0", "ips": [{"address": "192.168.2.2/24"}]}
    daemon.answer_result({"ips": [{"address": "192.168.2.2/24"}]})
    answer = run("CHECK", network_config, attachment_env, socket_path=daemon.path)
    assert (answer.returncode, answer.stdout) == (0, "")
    assert daemon.requests[0]["config"]["prevResult"] == network_config["prevResult"]


def test_check_failure_from_the_daemon(
    run: Any, daemon: Any, network_config: dict[str, Any], attachment_env: dict[str, str]
) -> None:
    daemon.answer_error(103, "192.168.2.2/24 is not on net1")
    answer = run("CHECK", network_config, attachment_env, socket_path=daemon.path)
    assert answer.answer["code"] == 103


def test_status_success_prints_nothing(
    run: Any, daemon: Any, network_config: dict[str, Any]
) -> None:
    answer = run("STATUS", network_config, socket_path=daemon.path)
    assert (answer.returncode, answer.stdout) == (0, "")
    assert daemon.requests[0]["command"] == "STATUS"


def test_status_error_from_the_daemon(
    run: Any, daemon: Any, network_config: dict[str, Any]
) -> None:
    daemon.answer_error(50, "pool 192.168.2.0/24 is exhausted")
    answer = run("STATUS", network_config, socket_path=daemon.path)
    assert answer.answer["code"] == 50


VALID = [{"containerID": "c0ffee01", "ifname": "net1"}, {"containerID": "beef", "ifname": "net2"}]


def test_gc_forwards_the_valid_attachments(
    run: Any, daemon: Any, network_config: dict[str, Any]
) -> None:
    network_config["cniVersion"] = "1.1.0"
    network_config["cni.dev/valid-attachments"] = VALID
    answer = run("GC", network_config, {"CNI_PATH": "/opt/cni/bin"}, socket_path=daemon.path)
    assert (answer.returncode, answer.stdout) == (0, "")
    assert daemon.requests[0]["command"] == "GC"
    assert daemon.requests[0]["config"]["cni.dev/valid-attachments"] == VALID


def test_gc_with_an_empty_list_is_forwarded(
    run: Any, daemon: Any, network_config: dict[str, Any]
) -> None:
    network_config["cni.dev/valid-attachments"] = []
    answer = run("GC", network_config, socket_path=daemon.path)
    assert answer.returncode == 0
    assert daemon.requests[0]["config"]["cni.dev/valid-attachments"] == []


def test_gc_with_a_configuration_list_forwards_the_plugin_config(
    run: Any, daemon: Any, network_config: dict[str, Any]
) -> None:
    plugin = _without(_without(network_config, "cniVersion"), "name")
    config_list = {
        "cniVersion": "1.1.0",
        "name": "storage-net",
        "plugins": [plugin, {"type": "tuning"}],
        "cni.dev/valid-attachments": VALID,
    }
    answer = run("GC", config_list, socket_path=daemon.path)
    assert answer.returncode == 0, answer
    assert daemon.requests[0]["config"] == plugin | {
        "cniVersion": "1.1.0",
        "name": "storage-net",
        "cni.dev/valid-attachments": VALID,
    }


def test_status_with_a_configuration_list_without_our_ipam(run: Any, daemon: Any) -> None:
    config_list = {
        "cniVersion": "1.1.0",
        "name": "n",
        "plugins": [{"type": "bridge", "ipam": {"type": "host-local"}}],
    }
    answer = run("STATUS", config_list, socket_path=daemon.path)
    assert answer.answer["code"] == 7
    assert "whereabouts" in answer.answer["msg"]


def test_gc_error_from_the_daemon(run: Any, daemon: Any, network_config: dict[str, Any]) -> None:
    network_config["cni.dev/valid-attachments"] = VALID
    daemon.answer_error(104, "released 3 of 4 stale reservations", "192.168.2.9: conflict")
    answer = run("GC", network_config, socket_path=daemon.path)
    assert answer.answer["code"] == 104
    assert answer.answer["details"] == "192.168.2.9: conflict"


# --- which socket ----------------------------------------------------------------------


@pytest.fixture
def three_daemons(make_daemon: Any) -> tuple[Any, Any, Any]:
    return make_daemon("env.sock"), make_daemon("ipam.sock"), make_daemon("flat.sock")


def _served_by(*daemons: Any) -> list[int]:
    return [len(daemon.requests) for daemon in daemons]


def test_socket_precedence(
    run: Any,
    tmp_path: Path,
    three_daemons: tuple[Any, Any, Any],
    network_config: dict[str, Any],
    attachment_env: dict[str, str],
) -> None:
    from_env, from_ipam, from_flat = three_daemons
    flat_file = tmp_path / "whereabouts.conf"
    flat_file.write_text(json.dumps({"daemon_socket": from_flat.path, "log_level": "debug"}))
    network_config["ipam"]["configuration_path"] = str(flat_file)
    network_config["ipam"]["daemon_socket"] = from_ipam.path

    assert run("DEL", network_config, attachment_env, socket_path=from_env.path).returncode == 0
    assert _served_by(*three_daemons) == [1, 0, 0]

    assert run("DEL", network_config, attachment_env).returncode == 0
    assert _served_by(*three_daemons) == [1, 1, 0]

    del network_config["ipam"]["daemon_socket"]
    assert run("DEL", network_config, attachment_env).returncode == 0
    assert _served_by(*three_daemons) == [1, 1, 1]


def test_flat_file_without_socket_means_the_default_socket(
    run: Any, tmp_path: Path, network_config: dict[str, Any], attachment_env: dict[str, str]
) -> None:
    if os.path.exists(wire.DEFAULT_SOCKET):
        pytest.skip(f"a daemon listens on {wire.DEFAULT_SOCKET} on this machine")
    flat_file = tmp_path / "whereabouts.conf"
    flat_file.write_text(json.dumps({"log_level": "debug"}))
    network_config["ipam"]["configuration_path"] = str(flat_file)
    answer = run("ADD", network_config, attachment_env)
    assert answer.answer["code"] == 11
    assert wire.DEFAULT_SOCKET in answer.answer["msg"]


@pytest.mark.parametrize("content", ["{not json", "[1]"])
def test_broken_flat_file_is_a_config_error_naming_it(
    run: Any,
    tmp_path: Path,
    network_config: dict[str, Any],
    attachment_env: dict[str, str],
    content: str,
) -> None:
    flat_file = tmp_path / "whereabouts.conf"
    flat_file.write_text(content)
    network_config["ipam"]["configuration_path"] = str(flat_file)
    answer = run("ADD", network_config, attachment_env)
    assert answer.answer["code"] == 7
    assert str(flat_file) in answer.answer["msg"]


def test_flat_file_is_not_read_when_the_socket_is_known(
    run: Any,
    daemon: Any,
    tmp_path: Path,
    network_config: dict[str, Any],
    attachment_env: dict[str, str],
) -> None:
    flat_file = tmp_path / "whereabouts.conf"
    flat_file.write_text("{broken")  # the daemon reports it; the shim need not read it
    network_config["ipam"]["configuration_path"] = str(flat_file)
    answer = run("DEL", network_config, attachment_env, socket_path=daemon.path)
    assert answer.returncode == 0
