"""Harness for the CNI shim: the installed executable and a daemon stand-in on a unix socket.

The stand-in speaks the project's own shim<->daemon protocol (one JSON line
each way); it records every request and answers what the test tells it to.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from whereabouts_py.cni.install import install_cni

PLUGIN_NAME = "whereabouts"

NETWORK_CONFIG: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "storage-net",
    "type": "macvlan",
    "master": "eth1",
    "ipam": {"type": PLUGIN_NAME, "range": "192.168.2.0/24", "gateway": "192.168.2.1"},
}

ATTACHMENT_ENV = {
    "CNI_CONTAINERID": "c0ffee01",
    "CNI_NETNS": "/var/run/netns/pod-1",
    "CNI_IFNAME": "net1",
    "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-1",
    "CNI_PATH": "/opt/cni/bin",
}


class FakeDaemon:
    """Answers each connection with ``answer`` (or holds it open when ``silent``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.requests: list[dict[str, Any]] = []
        self.answer: bytes = b'{"result": {}}\n'
        self.silent = False
        self._held: list[socket.socket] = []
        self._stopped = threading.Event()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(path)
        self._server.listen(16)
        self._server.settimeout(0.05)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def answer_result(self, result: Mapping[str, Any]) -> None:
        self.answer = json.dumps({"result": result}).encode() + b"\n"

    def answer_error(self, code: int, msg: str, details: str = "") -> None:
        error = {"code": code, "msg": msg, "details": details}
        self.answer = json.dumps({"error": error}).encode() + b"\n"

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(5)
            with connection.makefile("rb") as reader:
                line = reader.readline()
            self.requests.append(json.loads(line))
            if self.silent:
                self._held.append(connection)
                continue
            connection.sendall(self.answer)
            connection.close()

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        self._server.close()
        for connection in self._held:
            connection.close()


@dataclass
class ShimRun:
    returncode: int
    stdout: str
    stderr: str
    elapsed_s: float
    answer: dict[str, Any] | None = field(default=None)


@pytest.fixture(scope="session")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin executable, installed the way operators install it."""
    return install_cni(tmp_path_factory.mktemp("cni-bin"), PLUGIN_NAME)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Unix socket paths are limited to 107 bytes, so stay out of pytest's deep tmp_path.
    directory = Path(tempfile.mkdtemp(prefix="wpy-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def make_daemon(socket_dir: Path) -> Iterator[Any]:
    daemons: list[FakeDaemon] = []

    def make(name: str = "daemon.sock") -> FakeDaemon:
        daemon = FakeDaemon(str(socket_dir / name))
        daemons.append(daemon)
        return daemon

    yield make
    for daemon in daemons:
        daemon.close()


@pytest.fixture
def daemon(make_daemon: Any) -> FakeDaemon:
    made: FakeDaemon = make_daemon()
    return made


@pytest.fixture
def network_config() -> dict[str, Any]:
    """A NAD-style network configuration that uses the plugin (a fresh copy per test)."""
    copied: dict[str, Any] = json.loads(json.dumps(NETWORK_CONFIG))
    return copied


@pytest.fixture
def attachment_env() -> dict[str, str]:
    """What a runtime sets for ADD, DEL and CHECK."""
    return dict(ATTACHMENT_ENV)


@pytest.fixture
def run(shim: Path) -> Any:
    """``run(command, stdin, env=None, socket_path=None) -> ShimRun`` with the installed shim."""

    def run_installed(
        command: str | None,
        stdin: bytes | Mapping[str, Any] | list[Any],
        env: Mapping[str, str] | None = None,
        *,
        socket_path: str | None = None,
    ) -> ShimRun:
        return run_shim(shim, command, stdin, env, socket_path=socket_path)

    return run_installed


def run_shim(
    shim: Path,
    command: str | None,
    stdin: bytes | Mapping[str, Any] | list[Any],
    env: Mapping[str, str] | None = None,
    *,
    socket_path: str | None = None,
) -> ShimRun:
    """Run the installed shim the way a runtime does, and check its output is well-formed."""
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if command is not None:
        environment["CNI_COMMAND"] = command
    if socket_path is not None:
        environment["WHEREABOUTS_PY_SOCKET"] = socket_path
    environment.update(env or {})
    data = stdin if isinstance(stdin, bytes) else json.dumps(stdin).encode()
    started = time.monotonic()
    completed = subprocess.run(
        [str(shim)], input=data, env=environment, capture_output=True, timeout=30, check=False
    )
    run = ShimRun(
        completed.returncode,
        completed.stdout.decode(),
        completed.stderr.decode(),
        time.monotonic() - started,
    )
    assert "Traceback" not in run.stdout + run.stderr, run
    if run.stdout.strip():
        run.answer = json.loads(run.stdout)  # exactly one JSON document, or this raises
        assert isinstance(run.answer, dict)
    if run.returncode != 0:
        assert run.returncode == 1, run
        assert run.answer is not None, f"an error must come with a CNI error object: {run}"
        assert set(run.answer) <= {"cniVersion", "code", "msg", "details"}, run.answer
    return run
