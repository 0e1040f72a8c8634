"""Simulated nodes: one real ``whereabouts-py daemon`` process per node name.

Each daemon has its own node name and unix socket, and talks to the local
control plane, exactly as a DaemonSet pod would on a real node. Tests, the
benchmarks and the demo use these.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from whereabouts_py_dev.controlplane import ControlPlane, ControlPlaneError, spawn_tied

START_TIMEOUT_S = 60.0


@dataclass
class NodeDaemon:
    node: str
    socket: Path
    log: Path
    process: subprocess.Popen[bytes]

    def environment(self) -> dict[str, str]:
        """What the runtime passes to the shim so it finds this node's daemon."""
        return {"WHEREABOUTS_PY_SOCKET": str(self.socket)}


@dataclass
class SimulatedNodes:
    """Start daemons for ``names``; stop them all on exit, even on failure."""

    plane: ControlPlane
    directory: Path
    names: Sequence[str]
    namespace: str = "kube-system"
    identity: str = "admin"
    extra_args: Sequence[str] = ()
    daemons: dict[str, NodeDaemon] = field(default_factory=dict)

    def __enter__(self) -> SimulatedNodes:
        try:
            for name in self.names:
                self.daemons[name] = self._spawn(name)
            for daemon in self.daemons.values():
                self._wait_ready(daemon)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __getitem__(self, name: str) -> NodeDaemon:
        return self.daemons[name]

    def _spawn(self, name: str) -> NodeDaemon:
        self.directory.mkdir(parents=True, exist_ok=True)
        sock = self.directory / f"{name}.sock"
        log_path = self.directory / f"daemon-{name}.log"
        command = [
            sys.executable,
            "-m",
            "whereabouts_py",
            "daemon",
            "--node-name",
            name,
            "--socket",
            str(sock),
            "--kubeconfig",
            str(self.plane.kubeconfig_for(self.identity)),
            "--namespace",
            self.namespace,
            *self.extra_args,
        ]
        return NodeDaemon(name, sock, log_path, spawn_tied(command, log_path))

    @staticmethod
    def _wait_ready(daemon: NodeDaemon) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if daemon.process.poll() is not None:
                raise ControlPlaneError(
                    f"daemon for {daemon.node} exited ({daemon.process.returncode}): "
                    f"{daemon.log.read_text(errors='replace')[-2000:]}"
                )
            if daemon.socket.exists():
                with socket.socket(socket.AF_UNIX) as probe:
                    try:
                        probe.connect(str(daemon.socket))
                        return
                    except OSError:
                        pass
            time.sleep(0.05)
        raise ControlPlaneError(f"daemon for {daemon.node} did not open {daemon.socket}")

    def stop(self) -> None:
        for daemon in self.daemons.values():
            if daemon.process.poll() is None:
                daemon.process.terminate()
        for daemon in self.daemons.values():
            try:
                daemon.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.process.kill()
                daemon.process.wait(timeout=5)
        self.daemons.clear()
