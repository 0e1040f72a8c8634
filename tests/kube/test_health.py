"""/healthz and /readyz of the real daemon and reconciler processes, passing and failing.

The daemon reaches the API server through a TCP relay that the test closes and
reopens (the API "goes away" for this daemon only); its socket loop is taken
away by removing its socket file. The reconciler's kopf loop is blocked by a
handler that sleeps in it, injected by a small driver that otherwise runs the
real ``whereabouts-py reconciler``.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from whereabouts_py_dev.controlplane import ControlPlane, free_port, spawn_tied

TIMEOUT_S = 60.0


class Relay:
    """Forwards 127.0.0.1:``port`` to the API server until ``close`` (which cuts every stream)."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port = port
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self._sockets: list[socket.socket] = [self._listener]
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError, ValueError):
            while not self._closed.is_set():
                ready, _, _ = select.select([a, b], [], [], 0.2)
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    (b if source is a else a).sendall(data)

    def close(self) -> None:
        self._closed.set()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_for(
    port: int, path: str, status: int, log: Path, alive: Callable[[], bool]
) -> tuple[int, str]:
    deadline = time.monotonic() + TIMEOUT_S
    answer: tuple[int, str] = (0, "")
    while time.monotonic() < deadline:
        assert alive(), log.read_text(errors="replace")[-3000:]
        with contextlib.suppress(OSError):
            answer = get(port, path)
            if answer[0] == status:
                return answer
        time.sleep(0.2)
    raise AssertionError(f"{path}: wanted {status}, last {answer}\n{log.read_text()[-3000:]}")


@pytest.fixture
def relayed_kubeconfig(control_plane: ControlPlane, tmp_path: Path) -> Iterator[tuple[Path, int]]:
    config = json.loads(control_plane.kubeconfig.read_text())
    port = free_port()
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path = tmp_path / "kubeconfig-relayed"
    path.write_text(json.dumps(config))
    yield path, port


def test_daemon_healthz_follows_its_socket_loop_and_readyz_the_api(
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
    relayed_kubeconfig: tuple[Path, int],
) -> None:
    kubeconfig, relay_port = relayed_kubeconfig
    relay = Relay(relay_port, ("127.0.0.1", control_plane.apiserver_port))
    metrics_port = free_port()
    sock = tmp_path / "daemon.sock"
    log = tmp_path / "daemon.log"
    command = [sys.executable, "-m", "whereabouts_py", "daemon", "--node-name", "node-h"]
    command += ["--socket", str(sock), "--kubeconfig", str(kubeconfig), "--namespace", namespace]
    command += ["--metrics-address", f"127.0.0.1:{metrics_port}"]
    daemon = spawn_tied(command, log)
    try:

        def alive() -> bool:
            return daemon.poll() is None

        status, body = wait_for(metrics_port, "/healthz", 200, log, alive)
        assert body.splitlines() == ["[+]socket-loop ok", "healthz check passed"]
        status, body = get(metrics_port, "/readyz?verbose")
        assert (status, body.splitlines()) == (
            200,
            ["[+]socket-loop ok", "[+]kubernetes-api ok", "readyz check passed"],
        )
        assert get(metrics_port, "/metrics")[0] == 200
        assert get(metrics_port, "/nothing")[0] == 404

        relay.close()  # the API is gone for this daemon: not ready, still alive
        status, body = wait_for(metrics_port, "/readyz", 503, log, alive)
        assert "[-]kubernetes-api failed: " in body
        assert body.splitlines()[-1] == "readyz check failed"
        assert get(metrics_port, "/healthz")[0] == 200

        relay = Relay(relay_port, ("127.0.0.1", control_plane.apiserver_port))
        wait_for(metrics_port, "/readyz", 200, log, alive)

        sock.unlink()  # no shim can reach this daemon any more: restart it
        status, body = get(metrics_port, "/healthz")
        assert status == 503
        assert f"[-]socket-loop failed: cannot connect to {sock}" in body
        assert body.splitlines()[-1] == "healthz check failed"
        assert get(metrics_port, "/readyz")[0] == 503
    finally:
        relay.close()
        daemon.terminate()
        daemon.wait(timeout=15)


# Runs the real reconciler with one more kopf handler: a pod named freeze-the-loop
# makes it sleep 8 s inside kopf's event loop, as a handler stuck in a blocking
# call would. The stall limit is lowered from 30 s to 3 s.
FREEZING_RECONCILER = """
import sys, time
import kopf
from whereabouts_py.reconciler import operator
operator.LOOP_STALL_S = 3.0
original = operator.build_registry

def build_registry(*args, **kwargs):
    registry = original(*args, **kwargs)

    @kopf.on.event("v1", "pods", registry=registry, id="freeze",
                   when=lambda name, **_: name == "freeze-the-loop")
    async def freeze(**_):
        print("freezing the operator loop", flush=True)
        time.sleep(8)

    return registry

operator.build_registry = build_registry
from whereabouts_py.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_reconciler_healthz_fails_while_its_operator_loop_is_stuck(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    def create_pod(name: str) -> None:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"nodeName": "node-h", "containers": [{"name": "c", "image": "pause"}]},
        }
        control_plane.kubectl("create", "-f", "-", input_text=json.dumps(pod))

    create_pod("bystander")  # its listing tells us when kopf watches pods
    metrics_port = free_port()
    log = tmp_path / "reconciler.log"
    command = [sys.executable, "-c", FREEZING_RECONCILER, "reconciler", "--identity", "rec-h"]
    command += ["--kubeconfig", str(control_plane.kubeconfig), "--namespace", namespace]
    command += ["--metrics-address", f"127.0.0.1:{metrics_port}", "--sweep-interval", "300"]
    reconciler = spawn_tied(command, log)
    try:

        def alive() -> bool:
            return reconciler.poll() is None

        deadline = time.monotonic() + TIMEOUT_S
        while "pod watch established" not in log.read_text(errors="replace"):
            assert alive() and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        status, body = wait_for(metrics_port, "/healthz", 200, log, alive)
        assert body.splitlines() == [
            "[+]operator-loop ok",
            "[+]threads ok",
            "healthz check passed",
        ]
        status, body = get(metrics_port, "/readyz")
        assert status == 200
        assert "[+]kubernetes-api ok" in body

        create_pod("freeze-the-loop")
        status, body = wait_for(metrics_port, "/healthz", 503, log, alive)
        assert "freezing the operator loop" in log.read_text()
        assert "[-]operator-loop failed: no progress for " in body
        assert "[+]threads ok" in body
        # The handler returns after 8 s: the loop goes round again.
        wait_for(metrics_port, "/healthz", 200, log, alive)
    finally:
        reconciler.terminate()
        reconciler.wait(timeout=20)
