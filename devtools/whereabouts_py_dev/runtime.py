"""Run a CNI plugin the way a container runtime does: environment in, JSON out."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CNI_BIN_DIR = Path("/usr/lib/cni")


@dataclass(frozen=True)
class Outcome:
    """What a plugin answered: exit status, parsed stdout (if any) and stderr."""

    returncode: int
    output: dict[str, Any] | None
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def code(self) -> int | None:
        """The CNI error code, when the plugin failed with an error object."""
        if self.output is None or self.ok:
            return None
        code = self.output.get("code")
        return code if isinstance(code, int) else None

    def addresses(self) -> list[str]:
        if self.output is None:
            return []
        return [str(ip["address"]) for ip in self.output.get("ips", [])]


def invoke(
    plugin: Path | str,
    command: str,
    config: Mapping[str, Any] | str,
    *,
    container_id: str = "",
    ifname: str = "",
    netns: str = "",
    args: str = "",
    cni_path: Path | str = CNI_BIN_DIR,
    env: Mapping[str, str] | None = None,
    in_netns: str | None = None,
    timeout_s: float = 60.0,
) -> Outcome:
    """Execute ``plugin`` for ``command``; ``in_netns`` runs it inside a named netns."""
    environment = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_ARGS": args,
        "CNI_PATH": str(cni_path),
    }
    environment = {k: v for k, v in environment.items() if v or k == "CNI_COMMAND"}
    environment.update(env or {})
    argv = [str(plugin)]
    if in_netns is not None:
        argv = ["ip", "netns", "exec", in_netns, *argv]
    stdin = config if isinstance(config, str) else json.dumps(config)
    completed = subprocess.run(
        argv,
        input=stdin,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    output: dict[str, Any] | None = None
    if completed.stdout.strip():
        try:
            parsed = json.loads(completed.stdout)
        except json.JSONDecodeError:
            parsed = None
        output = parsed if isinstance(parsed, dict) else None
    return Outcome(completed.returncode, output, completed.stdout, completed.stderr)


def pod_args(namespace: str, name: str, uid: str = "", infra: str = "") -> str:
    """CNI_ARGS as Multus and the kubelet pass them."""
    parts = ["IgnoreUnknown=1", f"K8S_POD_NAMESPACE={namespace}", f"K8S_POD_NAME={name}"]
    if infra:
        parts.append(f"K8S_POD_INFRA_CONTAINER_ID={infra}")
    if uid:
        parts.append(f"K8S_POD_UID={uid}")
    return ";".join(parts)
