"""Hostile stdin and environment at the shim: errors with spec codes, never a traceback."""

from __future__ import annotations

import json
from typing import Any

import pytest

from whereabouts_py.cni import limits, wire


def nested(depth: int) -> bytes:
    return b'{"cniVersion": "1.0.0", "x": ' + b"[" * depth + b"]" * depth + b"}"


def test_stdin_over_the_limit_is_permanent_and_names_the_limit(
    run: Any, daemon: Any, network_config: dict[str, Any], attachment_env: dict[str, str]
) -> None:
    network_config["padding"] = "x" * (wire.MAX_STDIN_BYTES + 10)
    result = run("ADD", network_config, attachment_env, socket_path=daemon.path)
    assert result.answer["code"] == 7, result.answer
    assert str(wire.MAX_STDIN_BYTES) in result.answer["msg"]
    assert "4 MiB" in result.answer["msg"]
    assert daemon.requests == []


def test_stdin_just_under_the_limit_is_forwarded(
    run: Any, daemon: Any, network_config: dict[str, Any], attachment_env: dict[str, str]
) -> None:
    network_config["padding"] = "x" * (wire.MAX_STDIN_BYTES - 1000)
    daemon.answer_result({"ips": [{"address": "192.168.2.5/24"}]})
    result = run("ADD", network_config, attachment_env, socket_path=daemon.path)
    assert result.returncode == 0, result
    assert len(daemon.requests) == 1


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deeply_nested_json_is_a_decode_error(
    run: Any, daemon: Any, attachment_env: dict[str, str], depth: int
) -> None:
    result = run("ADD", nested(depth), attachment_env, socket_path=daemon.path)
    assert result.answer["code"] == 6, result.answer
    assert "deep" in result.answer["msg"]
    assert daemon.requests == []


def test_nesting_within_the_limit_is_forwarded(
    run: Any, daemon: Any, network_config: dict[str, Any], attachment_env: dict[str, str]
) -> None:
    value: Any = []
    for _ in range(limits.MAX_DEPTH - 2):
        value = [value]
    network_config["deep"] = value
    result = run("DEL", network_config, attachment_env, socket_path=daemon.path)
    assert result.returncode == 0, result
    over: Any = [value, [[[]]]]
    network_config["deep"] = [[over]]
    result = run("DEL", network_config, attachment_env, socket_path=daemon.path)
    assert result.answer["code"] == 6, result.answer


@pytest.mark.parametrize(
    ("variable", "value", "mentions"),
    [
        ("CNI_CONTAINERID", "../../x", "CNI_CONTAINERID"),
        ("CNI_CONTAINERID", "a" * 300, "CNI_CONTAINERID"),
        ("CNI_IFNAME", "a/b", "CNI_IFNAME"),
        ("CNI_IFNAME", "eth\x01", "CNI_IFNAME"),
        ("CNI_NETNS", "/" + "n" * 5000, "CNI_NETNS"),
        ("CNI_ARGS", "K8S_POD_NAMESPACE=Default;K8S_POD_NAME=p", "K8S_POD_NAMESPACE"),
        ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=../p", "K8S_POD_NAME"),
        ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + "p" * 254, "K8S_POD_NAME"),
        ("CNI_ARGS", "IgnoreUnknown=1;garbage", "CNI_ARGS"),
    ],
)
def test_invalid_environment_is_code_4_naming_the_variable(
    run: Any,
    daemon: Any,
    network_config: dict[str, Any],
    attachment_env: dict[str, str],
    *,
    variable: str,
    value: str,
    mentions: str,
) -> None:
    result = run(
        "ADD", network_config, {**attachment_env, variable: value}, socket_path=daemon.path
    )
    assert result.answer["code"] == 4, result.answer
    assert mentions in result.answer["msg"] + result.answer.get("details", "")
    assert len(result.answer["msg"]) < 600
    assert daemon.requests == []


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32"])
def test_json_in_other_unicode_encodings_is_read(
    run: Any,
    daemon: Any,
    network_config: dict[str, Any],
    attachment_env: dict[str, str],
    encoding: str,
) -> None:
    stdin = json.dumps(network_config).encode(encoding)
    result = run("DEL", stdin, attachment_env, socket_path=daemon.path)
    assert result.returncode == 0, result
    assert daemon.requests[0]["config"] == network_config


def test_invalid_utf8_is_a_decode_error(
    run: Any, daemon: Any, attachment_env: dict[str, str]
) -> None:
    result = run("ADD", b'{"cniVersion": "1.0.0", "x": "\xff\xfe\xfa"}', attachment_env)
    assert result.answer["code"] == 6, result.answer


def test_lone_surrogates_travel_to_the_daemon(
    run: Any, daemon: Any, attachment_env: dict[str, str], network_config: dict[str, Any]
) -> None:
    stdin = json.dumps(network_config)[:-1] + ', "odd": "\\ud800"}'
    result = run("DEL", stdin.encode(), attachment_env, socket_path=daemon.path)
    assert result.returncode == 0, result
    assert daemon.requests[0]["config"]["odd"] == "\ud800"
