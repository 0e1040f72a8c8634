"""The node's whereabouts.d: the flat file and a kubeconfig, kept current.

``install-cni --conf-dir`` writes them once; the daemon rewrites them
whenever the ServiceAccount token or CA it runs with changes (both rotate).
The flat file tells the shim (and any tool that reads whereabouts' flat
file) where the daemon listens, and points at the kubeconfig, which carries
the daemon's ServiceAccount credentials for tools such as the Go project's
that talk to the API from the node. Both are written atomically, mode 0600.
Standard library only.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
FLAT_FILE = "whereabouts.conf"
KUBECONFIG = "whereabouts.kubeconfig"


@dataclass(frozen=True)
class NodeConfig:
    """What goes into whereabouts.d, and where the node sees it."""

    conf_dir: Path  # where to write (in the container: the host's dir mounted)
    host_conf_dir: str  # the same dir as the node sees it (paths inside the files)
    daemon_socket: str
    service_account_dir: Path = SERVICE_ACCOUNT_DIR


def atomic_write(path: Path, text: str, *, mode: int = 0o600, if_changed: bool = True) -> bool:
    """Write ``text`` with ``mode``; True if written.

    With ``if_changed`` a file that already holds both is left alone. The text
    goes to a temporary file beside ``path``, is flushed to disk and renamed
    over it: a reader sees the old file or the new one, never a part.
    """
    try:
        if if_changed and path.read_text() == text and (path.stat().st_mode & 0o777) == mode:
            return False
    except (OSError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as file:
            os.fchmod(file.fileno(), mode)
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True


def _kubeconfig(server: str, ca_pem: str, token: str, namespace: str) -> dict[str, Any]:
    import base64

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem.encode()).decode(),
                },
            }
        ],
        "users": [{"name": "whereabouts", "user": {"token": token}}],
        "contexts": [
            {
                "name": "whereabouts",
                "context": {"cluster": "local", "user": "whereabouts", "namespace": namespace},
            }
        ],
        "current-context": "whereabouts",
    }


def write_node_config(config: NodeConfig, environ: Mapping[str, str] | None = None) -> list[Path]:
    """Write the flat file and (when in a pod) the kubeconfig; return the files changed."""
    env = os.environ if environ is None else environ
    changed: list[Path] = []
    flat: dict[str, Any] = {"daemon_socket": config.daemon_socket}
    sa_dir = config.service_account_dir
    token_file, ca_file = sa_dir / "token", sa_dir / "ca.crt"
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if host and port and token_file.is_file() and ca_file.is_file():
        server_host = f"[{host}]" if ":" in host else host
        namespace_file = sa_dir / "namespace"
        namespace = (
            namespace_file.read_text().strip() if namespace_file.is_file() else "kube-system"
        )
        kubeconfig = _kubeconfig(
            f"https://{server_host}:{port}",
            ca_file.read_text(),
            token_file.read_text().strip(),
            namespace,
        )
        path = config.conf_dir / KUBECONFIG
        if atomic_write(path, json.dumps(kubeconfig, indent=2) + "\n"):
            changed.append(path)
        flat["kubernetes"] = {"kubeconfig": f"{config.host_conf_dir.rstrip('/')}/{KUBECONFIG}"}
    path = config.conf_dir / FLAT_FILE
    if atomic_write(path, json.dumps(flat, indent=2) + "\n"):
        changed.append(path)
    return changed
