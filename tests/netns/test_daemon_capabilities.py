"""The daemon does its whole job with the one capability its DaemonSet adds back (SYS_ADMIN).

The daemon runs as root with its capability bounding set cut by ``setpriv``,
as a container with ``drop: [ALL]`` is: with SYS_ADMIN alone ADD, CHECK (which
enters the pod's network namespace) and DEL work; without it CHECK cannot
enter the namespace, which is why the manifest adds it.
"""

from __future__ import annotations

import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from whereabouts_py.cni.install import install_cni
from whereabouts_py_dev.controlplane import ControlPlane, spawn_tied
from whereabouts_py_dev.netns import ip
from whereabouts_py_dev.runtime import Outcome, invoke, pod_args

DAEMONSET = Path(__file__).resolve().parents[2] / "manifests" / "base" / "daemonset.yaml"


def manifest_capabilities() -> list[str]:
    spec = yaml.safe_load(DAEMONSET.read_text())["spec"]["template"]["spec"]
    added: list[str] = spec["containers"][0]["securityContext"]["capabilities"]["add"]
    return added


@contextmanager
def daemon_with(
    capabilities: list[str], plane: ControlPlane, namespace: str, directory: Path
) -> Iterator[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    sock = directory / "daemon.sock"
    keep = ",".join(["-all", *(f"+{name.lower()}" for name in capabilities)])
    command = ["setpriv", f"--bounding-set={keep}", f"--inh-caps={keep}", "--"]
    command += [sys.executable, "-m", "whereabouts_py", "daemon", "--node-name", "node-caps"]
    command += ["--socket", str(sock), "--kubeconfig", str(plane.kubeconfig)]
    command += ["--namespace", namespace]
    log = directory / "daemon.log"
    process = spawn_tied(command, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(str(sock))
                break
            except OSError:
                time.sleep(0.05)
        status = Path(f"/proc/{process.pid}/status").read_text()
        effective = next(line for line in status.splitlines() if line.startswith("CapEff:"))
        yield sock
        # What the daemon ran with: SYS_ADMIN is bit 21.
        wanted = sum(1 << {"SYS_ADMIN": 21}[name] for name in capabilities)
        assert int(effective.split()[1], 16) == wanted, effective
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_add_check_del_with_only_the_manifests_capabilities(
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
    make_netns: Callable[[str], str],
) -> None:
    assert manifest_capabilities() == ["SYS_ADMIN"]
    shim = install_cni(tmp_path / "bin")
    pod_ns = make_netns("pod")
    ip("-n", pod_ns, "link", "add", "net1", "type", "veth", "peer", "name", "net1peer")
    config = {
        "cniVersion": "1.0.0",
        "name": "capnet",
        "type": "macvlan",
        "ipam": {"type": "whereabouts", "range": "10.66.0.0/29"},
    }
    container = f"ctr-{uuid.uuid4().hex[:8]}"

    def cni(command: str, sock: Path) -> Outcome:
        return invoke(
            shim,
            command,
            config,
            container_id=container,
            ifname="net1",
            netns=f"/var/run/netns/{pod_ns}",
            args=pod_args(namespace, "caps"),
            env={"WHEREABOUTS_PY_SOCKET": str(sock)},
        )

    with daemon_with(["SYS_ADMIN"], control_plane, namespace, tmp_path / "sys-admin") as sock:
        added = cni("ADD", sock)
        assert added.ok, added.stdout
        assert added.addresses() == ["10.66.0.1/29"]
        ip("-n", pod_ns, "addr", "add", "10.66.0.1/29", "dev", "net1")
        checked = cni("CHECK", sock)
        assert checked.ok, checked.stdout
    with daemon_with([], control_plane, namespace, tmp_path / "none") as sock:
        refused = cni("CHECK", sock)
        assert not refused.ok
        assert "cannot be entered" in refused.stdout, refused.stdout
    with daemon_with(["SYS_ADMIN"], control_plane, namespace, tmp_path / "again") as sock:
        deleted = cni("DEL", sock)
        assert deleted.ok, deleted.stdout
