"""The request/answer exchange between the CNI shim and the node daemon.

Standard library only. Over a unix stream socket the shim sends one request
as a single line of JSON and reads one answer line back:

    request: {"command": "ADD", "containerID": ..., "netns": ..., "ifname": ...,
              "args": "K8S_POD_NAME=...;...", "path": ..., "config": {<stdin>}}
    answer:  {"result": {...}}                      on success
             {"error": {"code": N, "msg": ..., "details": ...}}   on failure

``result`` is version-neutral (``ips`` with ``address``/``gateway``, ``routes``,
``dns``); the shim renders it in the cniVersion the runtime asked for.
"""

from __future__ import annotations

import json
import socket

from whereabouts_py.errors import (
    DaemonUnreachableError,
    DecodeError,
    TryAgainError,
    WhereaboutsError,
    from_code,
)

# typing costs milliseconds at every CNI call; it is only needed to type-check.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_SOCKET = "/run/whereabouts-py/daemon.sock"
SOCKET_ENV = "WHEREABOUTS_PY_SOCKET"
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DecodeError("malformed message on the daemon socket", str(error)) from None
    if not isinstance(message, dict):
        raise DecodeError("malformed message on the daemon socket", "expected a JSON object")
    return message


def read_line(sock: socket.socket) -> bytes:
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
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
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
            sock.sendall(encode(request))
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
