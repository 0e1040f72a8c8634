"""whereabouts.d on the node: written 0600, usable, rewritten when credentials rotate."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from whereabouts_py.cni.nodeconf import NodeConfig, write_node_config
from whereabouts_py.daemon.main import keep_node_config
from whereabouts_py_dev.controlplane import ControlPlane


def service_account(directory: Path, token: str, ca: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "token").write_text(token)
    (directory / "ca.crt").write_text(ca)
    (directory / "namespace").write_text("kube-system\n")
    return directory


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_flat_file_and_kubeconfig_reach_the_api(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    sa = service_account(
        tmp_path / "sa", control_plane.token("admin"), control_plane.ca_file.read_text()
    )
    config = NodeConfig(
        tmp_path / "whereabouts.d", "/etc/cni/net.d/whereabouts.d", "/run/x.sock", sa
    )
    env = {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(control_plane.apiserver_port),
    }
    written = write_node_config(config, env)
    flat, kubeconfig = (
        tmp_path / "whereabouts.d/whereabouts.conf",
        tmp_path / "whereabouts.d/whereabouts.kubeconfig",
    )
    assert sorted(written) == sorted([flat, kubeconfig])
    assert mode(flat) == mode(kubeconfig) == 0o600
    assert json.loads(flat.read_text()) == {
        "daemon_socket": "/run/x.sock",
        "kubernetes": {"kubeconfig": "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig"},
    }
    listed = subprocess.run(
        [
            str(control_plane.binaries.kubectl),
            "--kubeconfig",
            str(kubeconfig),
            "get",
            "crd",
            "-o",
            "name",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert (
        "customresourcedefinition.apiextensions.k8s.io/ippools.whereabouts.cni.cncf.io"
        in listed.stdout
    )
    assert write_node_config(config, env) == []  # unchanged: nothing rewritten


def test_outside_a_pod_only_the_flat_file_is_written(tmp_path: Path) -> None:
    config = NodeConfig(
        tmp_path / "d", "/etc/cni/net.d/whereabouts.d", "/run/x.sock", tmp_path / "no-sa"
    )
    assert write_node_config(config, {}) == [tmp_path / "d" / "whereabouts.conf"]
    assert not (tmp_path / "d" / "whereabouts.kubeconfig").exists()


def test_the_daemon_rewrites_it_when_the_token_rotates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sa = service_account(tmp_path / "sa", "token-1", "CA-1")
    config = NodeConfig(tmp_path / "d", "/etc/cni/net.d/whereabouts.d", "/run/x.sock", sa)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    write_node_config(config)
    stop = threading.Event()
    keeper = threading.Thread(target=keep_node_config, args=(config, 0.1, stop), daemon=True)
    keeper.start()
    (sa / "token").write_text("token-2")
    kubeconfig = tmp_path / "d" / "whereabouts.kubeconfig"
    deadline = time.monotonic() + 5
    while "token-2" not in kubeconfig.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    keeper.join(2)
    assert json.loads(kubeconfig.read_text())["users"][0]["user"]["token"] == "token-2"
    assert mode(kubeconfig) == 0o600


def test_install_cni_writes_the_conf_dir(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "whereabouts_py",
            "install-cni",
            "--bin-dir",
            str(tmp_path / "bin"),
            "--conf-dir",
            str(tmp_path / "conf"),
            "--socket",
            "/run/custom.sock",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    flat = tmp_path / "conf" / "whereabouts.conf"
    assert json.loads(flat.read_text())["daemon_socket"] == "/run/custom.sock"
    assert mode(flat) == 0o600
