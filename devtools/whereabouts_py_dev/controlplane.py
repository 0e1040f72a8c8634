"""Start and stop a local control plane: etcd and kube-apiserver on loopback.

The flags follow what envtest uses for controller tests, with RBAC switched
on and static bearer tokens for a fixed set of identities, so that RBAC rules
written for our ServiceAccounts can be exercised for real. Nothing runs but
etcd and the apiserver: no controller manager, scheduler or kubelet (the
``cluster`` package adds those, and real nodes, around a ControlPlane).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whereabouts_py_dev.binaries import Binaries, ensure_binaries

NAD_CRD = Path(__file__).with_name("network-attachment-definition-crd.yaml")
STATE_FILE = "controlplane.json"
READY_TIMEOUT_S = 90.0
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/24"  # only a setting: nothing routes to it


class ControlPlaneError(RuntimeError):
    """The control plane could not be started, reached or stopped."""


@dataclass(frozen=True)
class Identity:
    """A user the apiserver knows through its static token file."""

    name: str
    user: str
    groups: tuple[str, ...]


# The admin, our two ServiceAccounts (as the apiserver would name them), and a
# user with no rights at all, for tests that RBAC really refuses.
IDENTITIES: tuple[Identity, ...] = (
    Identity("admin", "whereabouts-py-admin", ("system:masters", "system:authenticated")),
    Identity(
        "daemon",
        "system:serviceaccount:kube-system:whereabouts-daemon",
        ("system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"),
    ),
    Identity(
        "reconciler",
        "system:serviceaccount:kube-system:whereabouts-reconciler",
        ("system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"),
    ),
    Identity("nobody", "whereabouts-py-nobody", ("system:authenticated",)),
)


def default_crd_dir() -> Path:
    """The repository's ``crds/`` folder (the package is installed from a checkout)."""
    configured = os.environ.get("WHEREABOUTS_PY_CRDS")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "crds"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent() -> None:
    """In the child: get SIGKILL when the parent dies, so tests never leak servers."""
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def spawn_tied(command: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start one of our processes for a test or demo, logging to ``log_path``.

    It gets SIGKILL if its parent dies, so no test run can leak a daemon.
    """
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - the point of this helper
        )


@dataclass
class ControlPlane:
    """A running (or stopped) etcd + kube-apiserver pair and how to reach it."""

    directory: Path
    binaries: Binaries
    apiserver_port: int
    etcd_port: int
    tokens: dict[str, str]
    pids: dict[str, int] = field(default_factory=dict)
    owns_directory: bool = False
    # Identities beyond IDENTITIES (a cluster's nodes, controller-manager, scheduler).
    extra_identities: tuple[Identity, ...] = ()
    # Flags added to kube-apiserver's (a cluster's egress selector, for instance).
    apiserver_args: tuple[str, ...] = ()
    # Without a controller-manager no ServiceAccount exists, so its admission is off;
    # a cluster with one turns it on (pods then get their projected tokens).
    service_account_admission: bool = False
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    _tied: bool = field(default=False, repr=False)

    # --- where things are -------------------------------------------------
    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def ca_file(self) -> Path:
        return self.directory / "pki" / "apiserver.crt"

    @property
    def kubeconfig(self) -> Path:
        return self.kubeconfig_for("admin")

    def kubeconfig_for(self, identity: str) -> Path:
        if identity == "admin":
            return self.directory / "kubeconfig"
        return self.directory / f"kubeconfig-{identity}"

    def token(self, identity: str = "admin") -> str:
        return self.tokens[identity]

    @property
    def identities(self) -> tuple[Identity, ...]:
        return IDENTITIES + self.extra_identities

    @property
    def service_account_key(self) -> Path:
        """The private key that signs ServiceAccount tokens (the controller-manager's too)."""
        return self.directory / "pki" / "sa.key"

    # --- lifecycle ----------------------------------------------------------
    @classmethod
    def start(
        cls,
        directory: Path | None = None,
        *,
        crd_dirs: Sequence[Path] | None = None,
        die_with_parent: bool = False,
        log_line: bool = True,
        identities: Sequence[Identity] = (),
        apiserver_args: Sequence[str] = (),
        service_account_admission: bool = False,
    ) -> ControlPlane:
        """Build (once) and start a control plane; return when CRDs are established.

        ``identities`` are token users known besides ``IDENTITIES``, each with
        its kubeconfig (``kubeconfig_for(identity.name)``); ``apiserver_args``
        are added to kube-apiserver's flags. ``service_account_admission``
        mounts ServiceAccount tokens into pods (it needs a controller-manager to
        create each namespace's ``default`` ServiceAccount).
        """
        started = time.monotonic()
        binaries = ensure_binaries()
        owns = directory is None
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="whereabouts-py-cp-"))
        directory.mkdir(parents=True, exist_ok=True)
        if (directory / STATE_FILE).exists():
            existing = cls.load(directory)
            if existing.alive():
                raise ControlPlaneError(
                    f"a control plane is already running in {directory} "
                    f"(apiserver {existing.server}); stop it with "
                    f"'whereabouts-py-dev devcluster down"
                    f" --dir {directory}'"
                )
            existing.stop(remove_directory=False)
        plane = cls(
            directory=directory,
            binaries=binaries,
            apiserver_port=free_port(),
            etcd_port=free_port(),
            tokens={
                identity.name: secrets.token_hex(16) for identity in (*IDENTITIES, *identities)
            },
            owns_directory=owns,
            extra_identities=tuple(identities),
            apiserver_args=tuple(apiserver_args),
            service_account_admission=service_account_admission,
        )
        try:
            plane._launch(die_with_parent)
            plane._install_crds(list(crd_dirs) if crd_dirs is not None else [default_crd_dir()])
        except BaseException:
            plane.stop(remove_directory=owns)
            raise
        if log_line:
            print(
                f"devcluster: control plane ready at {plane.server} in "
                f"{time.monotonic() - started:.1f}s (kubeconfig {plane.kubeconfig})",
                flush=True,
                file=sys.stderr,
            )
        return plane

    @classmethod
    def load(cls, directory: Path) -> ControlPlane:
        state_path = directory / STATE_FILE
        try:
            state = json.loads(state_path.read_text())
        except FileNotFoundError:
            raise ControlPlaneError(f"no control plane state in {directory}") from None
        return cls(
            directory=directory,
            binaries=Binaries(Path(state["binaries"])),
            apiserver_port=int(state["apiserver_port"]),
            etcd_port=int(state["etcd_port"]),
            tokens=dict(state["tokens"]),
            pids={name: int(pid) for name, pid in state["pids"].items()},
            owns_directory=bool(state.get("owns_directory", False)),
            extra_identities=tuple(
                Identity(item["name"], item["user"], tuple(item["groups"]))
                for item in state.get("extra_identities", [])
            ),
            apiserver_args=tuple(state.get("apiserver_args", [])),
            service_account_admission=bool(state.get("service_account_admission", False)),
        )

    def alive(self) -> bool:
        return any(process_running(pid) for pid in self.pids.values())

    def stop(self, *, remove_directory: bool | None = None) -> None:
        """Stop both servers (TERM, then KILL) and remove the data if we made it."""
        for name in ("kube-apiserver", "etcd"):
            pid = self.pids.get(name)
            if pid is None:
                continue
            process = self._processes.get(name)
            _terminate(pid, process)
        self.pids.clear()
        self._processes.clear()
        remove = self.owns_directory if remove_directory is None else remove_directory
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / STATE_FILE).unlink()

    # --- helpers for callers ---------------------------------------------------
    def kubectl(
        self, *args: str, identity: str = "admin", check: bool = True, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binaries.kubectl), "--kubeconfig", str(self.kubeconfig_for(identity)), *args],
            capture_output=True,
            text=True,
            input=input_text,
            check=False,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise ControlPlaneError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def specs(self, resource: str, namespace: str) -> dict[str, dict[str, Any]]:
        """``spec`` of every object of ``resource`` in ``namespace``, by object name."""
        listed = json.loads(self.kubectl("get", resource, "-n", namespace, "-o", "json").stdout)
        return {item["metadata"]["name"]: item.get("spec") or {} for item in listed["items"]}

    def environment(self, identity: str = "admin") -> dict[str, str]:
        """Environment for a child process: KUBECONFIG set, kubectl first on PATH."""
        path = f"{self.binaries.directory}{os.pathsep}{os.environ.get('PATH', '')}"
        return dict(os.environ, KUBECONFIG=str(self.kubeconfig_for(identity)), PATH=path)

    # --- internals ------------------------------------------------------------
    def _launch(self, tied: bool) -> None:
        logs = self.directory / "logs"
        logs.mkdir(exist_ok=True)
        pki = self.directory / "pki"
        pki.mkdir(exist_ok=True)
        etcd_data = self.directory / "etcd"
        shutil.rmtree(etcd_data, ignore_errors=True)
        self._write_tokens()
        self._write_service_account_keys(pki)

        peer_port = free_port()
        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        self._spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=default",
                f"--data-dir={etcd_data}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            logs / "etcd.log",
            tied,
        )
        self._save_state()
        self._wait_http(f"{etcd_url}/health", "etcd", logs / "etcd.log", ssl_context=None)

        self._tied = tied
        self.start_apiserver()
        # The serving certificate exists now; clients verify against it.
        for identity in self.identities:
            self._write_kubeconfig(identity)

    def start_apiserver(self) -> None:
        """Start kube-apiserver (again) on the same port, data and certificates."""
        pki = self.directory / "pki"
        logs = self.directory / "logs"
        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        self._spawn(
            "kube-apiserver",
            [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                f"--cert-dir={pki}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.apiserver_port}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                *(
                    []
                    if self.service_account_admission
                    else ["--disable-admission-plugins=ServiceAccount"]
                ),
                "--authorization-mode=RBAC",
                f"--token-auth-file={self.directory / 'tokens.csv'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--endpoint-reconciler-type=none",
                "--v=0",
                *self.apiserver_args,
            ],
            logs / "kube-apiserver.log",
            self._tied,
        )
        self._save_state()
        self._wait_http(
            f"{self.server}/readyz",
            "kube-apiserver",
            logs / "kube-apiserver.log",
            ssl_context=None,
            token=self.token("admin"),
            insecure=True,
        )

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver only (etcd keeps the data), as in an apiserver restart."""
        pid = self.pids.pop("kube-apiserver", None)
        if pid is not None:
            _terminate(pid, self._processes.pop("kube-apiserver", None))
        self._save_state()

    def _install_crds(self, crd_dirs: list[Path]) -> None:
        files: list[Path] = [NAD_CRD]
        for crd_dir in crd_dirs:
            files.extend(sorted(crd_dir.glob("whereabouts.cni.cncf.io_*.yaml")))
            files.extend(sorted(crd_dir.glob("ipamclaims/k8s.cni.cncf.io_*.yaml")))
        args: list[str] = ["apply", "--server-side"]
        for path in files:
            args += ["-f", str(path)]
        self.kubectl(*args)
        wait = ("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        for _ in range(20):  # a CRD just created may have no status yet: kubectl wait fails
            if self.kubectl(*wait, check=False).returncode == 0:
                return
            time.sleep(0.25)
        self.kubectl(*wait)

    def _spawn(self, name: str, command: list[str], log_path: Path, tied: bool) -> None:
        log = log_path.open("ab")
        try:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent if tied else None,  # noqa: PLW1509
            )
        finally:
            log.close()
        self._processes[name] = process
        self.pids[name] = process.pid

    def _wait_http(
        self,
        url: str,
        name: str,
        log_path: Path,
        *,
        ssl_context: ssl.SSLContext | None,
        token: str | None = None,
        insecure: bool = False,
    ) -> None:
        if insecure:
            ssl_context = ssl.create_default_context()
            ssl_context.check_hostname = False
            ssl_context.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + READY_TIMEOUT_S
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            process = self._processes.get(name)
            if process is not None and process.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with status {process.returncode} while starting; "
                    f"last log lines:\n{_tail(log_path)}"
                )
            request = urllib.request.Request(url)
            if token:
                request.add_header("Authorization", f"Bearer {token}")
            try:
                with urllib.request.urlopen(request, timeout=2, context=ssl_context) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError) as error:
                last_error = str(error)
            time.sleep(0.1)
        raise ControlPlaneError(
            f"{name} was not ready at {url} after {READY_TIMEOUT_S:.0f}s ({last_error}); "
            f"last log lines:\n{_tail(log_path)}"
        )

    def _write_tokens(self) -> None:
        lines = []
        for identity in self.identities:
            groups = ",".join(identity.groups)
            lines.append(f'{self.tokens[identity.name]},{identity.user},{identity.user},"{groups}"')
        path = self.directory / "tokens.csv"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)

    @staticmethod
    def _write_service_account_keys(pki: Path) -> None:
        key, public = pki / "sa.key", pki / "sa.pub"
        if key.exists() and public.exists():
            return
        for command in (
            ["openssl", "genrsa", "-out", str(key), "2048"],
            ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(public)],
        ):
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise ControlPlaneError(
                    f"{' '.join(command)} failed: {result.stderr.strip()} (is openssl installed?)"
                )

    def _write_kubeconfig(self, identity: Identity) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "devcluster",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.ca_file),
                    },
                }
            ],
            "users": [{"name": identity.name, "user": {"token": self.tokens[identity.name]}}],
            "contexts": [
                {
                    "name": identity.name,
                    "context": {
                        "cluster": "devcluster",
                        "user": identity.name,
                        "namespace": "kube-system",
                    },
                }
            ],
            "current-context": identity.name,
        }
        path = self.kubeconfig_for(identity.name)
        path.write_text(json.dumps(config, indent=2) + "\n")
        path.chmod(0o600)

    def _save_state(self) -> None:
        state = {
            "binaries": str(self.binaries.directory),
            "apiserver_port": self.apiserver_port,
            "etcd_port": self.etcd_port,
            "tokens": self.tokens,
            "pids": self.pids,
            "owns_directory": self.owns_directory,
            "extra_identities": [
                {"name": item.name, "user": item.user, "groups": list(item.groups)}
                for item in self.extra_identities
            ],
            "apiserver_args": list(self.apiserver_args),
            "service_account_admission": self.service_account_admission,
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
        }
        path = self.directory / STATE_FILE
        path.write_text(json.dumps(state, indent=2) + "\n")
        path.chmod(0o600)


def process_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    return _pid_alive(pid) and not _is_zombie(pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _terminate(pid: int, process: subprocess.Popen[bytes] | None, grace_s: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if process is not None:
            if process.poll() is not None:
                return
        elif not _pid_alive(pid) or _is_zombie(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if process is not None:
        process.wait(timeout=5)


def _is_zombie(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return status.rsplit(")", 1)[-1].split()[0] == "Z"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def running(
    directory: Path | None = None, *, die_with_parent: bool = True
) -> Iterator[ControlPlane]:
    """A control plane for the duration of a ``with`` block."""
    plane = ControlPlane.start(directory, die_with_parent=die_with_parent)
    try:
        yield plane
    finally:
        plane.stop()
