"""The request/answer exchange between the CNI shim and the node daemon.

Standard library only. Over a unix stream socket the shim sends one request
as a single line of JSON and reads one answer line back:

    request: {"command": "ADD", "containerID": ..., "netns": ..., "ifname": ...,
              "args": "K8S_POD_NAME=...;...", "path": ..., "config": {<stdin>}}
    answer:  {"result": {...}}                      on success
             {"error": {"code": N, "msg": ..., "details": ...}}   on failure

``result`` is version-neutral (``ips`` with ``address``/``gateway``, ``routes``,
``dns``); the shim renders it in the cniVersion the runtime asked for.

Limits, checked by both ends with ``check_request`` (the shim before it sends,
the daemon on what it receives, since any local root process can write to
the socket): the network configuration on stdin at most ``MAX_STDIN_BYTES``,
a request line at most ``MAX_MESSAGE_BYTES``, JSON nested at most
``MAX_DEPTH`` levels, and every ``CNI_*`` value bounded and well-formed.
"""

from __future__ import annotations

import _socket

from whereabouts_py.cni import quickjson
from whereabouts_py.cni.limits import MAX_DEPTH, nesting_depth
from whereabouts_py.cni.names import (
    LABEL_RULE,
    SUBDOMAIN_RULE,
    is_namespace_name,
    is_object_name,
)
from whereabouts_py.errors import (
    CODE_INVALID_CONFIG,
    DaemonUnreachableError,
    DecodeError,
    InvalidEnvironmentError,
    TryAgainError,
    WhereaboutsError,
    from_code,
    shown,
)

# typing costs milliseconds at every CNI call; it is only needed to type-check.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

DEFAULT_SOCKET = "/run/whereabouts-py/daemon.sock"
SOCKET_ENV = "WHEREABOUTS_PY_SOCKET"
MIB = 1024 * 1024
# The network configuration a runtime may pass on stdin.
MAX_STDIN_BYTES = 4 * MIB
# One request line: the configuration re-encoded plus the CNI_* values.
MAX_MESSAGE_BYTES = 5 * MIB
# CNI_* values: real container IDs are 64 characters, interface names at most
# 15 (IFNAMSIZ - 1), paths at most PATH_MAX.
MAX_CONTAINER_ID = 256
MAX_IFNAME = 15
MAX_NETNS = 4095
MAX_ARGS = 64 * 1024
MAX_CNI_PATH = 64 * 1024
MAX_POD_UID = 128

VERBS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")
# Environment each verb needs (spec 1.1.0, section 2); DEL may come without a netns.
REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
}
# The request field that carries each CNI_* variable.
FIELDS = {
    "CNI_CONTAINERID": "containerID",
    "CNI_IFNAME": "ifname",
    "CNI_NETNS": "netns",
    "CNI_ARGS": "args",
    "CNI_PATH": "path",
}
_CONTAINER_ID_EXTRA = frozenset("_.-")


def encode(message: dict[str, Any]) -> bytes:
    return quickjson.dumps(message, compact=True).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    try:
        message = quickjson.loads(line)
    except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError
        raise DecodeError("malformed message on the daemon socket", str(error)) from None
    if not isinstance(message, dict):
        raise DecodeError("malformed message on the daemon socket", "expected a JSON object")
    return message


def check_config_depth(config: object) -> None:
    if nesting_depth(config) > MAX_DEPTH:
        raise DecodeError(
            "the network configuration nests JSON too deeply",
            f"at most {MAX_DEPTH} levels of lists and objects are accepted",
        )


def valid_container_id(container_id: str) -> bool:
    return (
        len(container_id) <= MAX_CONTAINER_ID
        and container_id[:1].isascii()
        and container_id[:1].isalnum()
        and all(
            (char.isascii() and char.isalnum()) or char in _CONTAINER_ID_EXTRA
            for char in container_id
        )
    )


def valid_ifname(ifname: str) -> bool:
    return (
        len(ifname) <= MAX_IFNAME
        and ifname not in (".", "..")
        and ifname.isprintable()
        and not any(char in "/:" or char.isspace() for char in ifname)
    )


def _invalid(name: str, value: str, problem: str) -> InvalidEnvironmentError:
    return InvalidEnvironmentError(f"{name}={shown(value)}: {problem}")


def check_cni_args(cni_args: str) -> None:
    """CNI_ARGS: ``K=V`` pairs, and a pod reference Kubernetes could have made."""
    if len(cni_args) > MAX_ARGS:
        raise _invalid("CNI_ARGS", cni_args, f"longer than {MAX_ARGS} characters")
    values: dict[str, str] = {}
    for pair in cni_args.split(";"):
        if not pair:
            continue
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise InvalidEnvironmentError(
                "malformed CNI_ARGS",
                f"{shown(pair)} is not KEY=VALUE; CNI_ARGS must be KEY=VALUE pairs "
                "separated by ';'",
            )
        values[key] = value
    namespace = values.get("K8S_POD_NAMESPACE", "")
    if namespace and not is_namespace_name(namespace):
        raise _invalid("CNI_ARGS K8S_POD_NAMESPACE", namespace, f"must be {LABEL_RULE}")
    name = values.get("K8S_POD_NAME", "")
    if name and not is_object_name(name):
        raise _invalid("CNI_ARGS K8S_POD_NAME", name, f"must be {SUBDOMAIN_RULE}")
    uid = values.get("K8S_POD_UID", "")
    if len(uid) > MAX_POD_UID or not uid.isprintable():
        raise _invalid("CNI_ARGS K8S_POD_UID", uid, f"must be at most {MAX_POD_UID} characters")
    infra = values.get("K8S_POD_INFRA_CONTAINER_ID", "")
    if infra and not valid_container_id(infra):
        raise _invalid("CNI_ARGS K8S_POD_INFRA_CONTAINER_ID", infra, "not a valid container ID")


def check_environment(command: str, environment: Mapping[str, object]) -> None:
    """The CNI_* values of one call (by variable name), as the spec and our limits allow."""
    for name in REQUIRED_ENV.get(command, ()):
        if not environment.get(name):
            raise InvalidEnvironmentError(
                f"{name} is not set", f"the runtime must set {name} for {command}"
            )
    for name in FIELDS:
        value = environment.get(name, "")
        if not isinstance(value, str):
            raise InvalidEnvironmentError(f"{name}={shown(value)}: must be a string")
        if "\0" in value:
            raise _invalid(name, value, "contains a NUL character")
    container_id = str(environment.get("CNI_CONTAINERID") or "")
    if container_id and not valid_container_id(container_id):
        raise InvalidEnvironmentError(
            f"CNI_CONTAINERID={shown(container_id)}: invalid container ID",
            f"at most {MAX_CONTAINER_ID} characters; it must start with a letter or digit "
            "and contain only letters, digits, '_', '.', '-'",
        )
    ifname = str(environment.get("CNI_IFNAME") or "")
    if ifname and not valid_ifname(ifname):
        raise InvalidEnvironmentError(
            f"CNI_IFNAME={shown(ifname)}: invalid interface name",
            f"at most {MAX_IFNAME} characters, not '.' or '..', no '/', ':' or whitespace",
        )
    netns = str(environment.get("CNI_NETNS") or "")
    if len(netns) > MAX_NETNS:
        raise _invalid("CNI_NETNS", netns, f"longer than {MAX_NETNS} characters")
    if len(str(environment.get("CNI_PATH") or "")) > MAX_CNI_PATH:
        raise _invalid(
            "CNI_PATH", str(environment["CNI_PATH"]), f"longer than {MAX_CNI_PATH} characters"
        )
    check_cni_args(str(environment.get("CNI_ARGS") or ""))


def check_request(request: dict[str, Any]) -> None:
    """A request as the daemon receives it: the same checks as the shim's, and a config object."""
    command = request.get("command")
    if not isinstance(command, str) or command not in VERBS or command == "VERSION":
        raise InvalidEnvironmentError(
            f"CNI_COMMAND={shown(command)}: not a verb the daemon serves",
            "expected one of ADD, DEL, CHECK, GC, STATUS",
        )
    check_environment(command, {name: request.get(key, "") for name, key in FIELDS.items()})
    config = request.get("config")
    if not isinstance(config, dict):
        raise DecodeError("the request carries no network configuration object")
    check_config_depth(config)


def encode_request(request: dict[str, Any]) -> bytes:
    """One request line, refused (permanently) when the daemon would not read it."""
    data = encode(request)
    if len(data) > MAX_MESSAGE_BYTES:
        raise WhereaboutsError(
            f"the request is {len(data)} bytes, over the limit of {MAX_MESSAGE_BYTES} bytes "
            f"({MAX_MESSAGE_BYTES // MIB} MiB)",
            "the network configuration, encoded as JSON, is too large; make it smaller",
            code=CODE_INVALID_CONFIG,
        )
    return data


def read_line(sock: _socket.socket) -> bytes:
    """Read up to and including the first newline (or EOF)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        newline = chunk.find(b"\n")
        if newline >= 0:
            chunks.append(chunk[: newline + 1])
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_MESSAGE_BYTES:
            raise DecodeError("message on the daemon socket too large", f"over {size} bytes")
    return b"".join(chunks)


def call(path: str, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Send one request to the daemon at ``path``; return its result or raise its error."""
    data = encode_request(request)
    # _socket, not socket: the socket module imports enum and selectors, which
    # cost more at every CNI call than the rest of the exchange.
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        try:
            sock.connect(path)
        except OSError as error:
            raise DaemonUnreachableError(
                f"whereabouts-py daemon not reachable at {path}",
                f"{error.strerror or error}; is the whereabouts-py DaemonSet running on this node?",
            ) from None
        try:
            sock.sendall(data)
            line = read_line(sock)
        except TimeoutError:
            raise TryAgainError(
                f"whereabouts-py daemon at {path} did not answer within {timeout_s:g}s",
                "the daemon is overloaded or the Kubernetes API is slow; retry",
            ) from None
        except OSError as error:
            raise DaemonUnreachableError(
                f"whereabouts-py daemon at {path} closed the connection", str(error)
            ) from None
    finally:
        sock.close()
    if not line:
        raise DaemonUnreachableError(
            f"whereabouts-py daemon at {path} closed the connection without an answer"
        )
    answer = decode(line)
    failure = answer.get("error")
    if isinstance(failure, dict):
        raise from_code(
            int(failure.get("code", 999)),
            str(failure.get("msg", "")),
            str(failure.get("details", "")),
        )
    result = answer.get("result")
    if not isinstance(result, dict):
        raise WhereaboutsError("the daemon's answer has no result", repr(answer)[:200])
    return result
