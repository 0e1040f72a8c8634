"""Build the pinned whereabouts Go plugin once and cache it by version.

The binary is the real ``whereabouts`` CNI IPAM plugin of the Go project this
product replaces (package ``cmd`` of ``github.com/k8snetworkplumbingwg/whereabouts``),
compiled with this machine's Go toolchain through the wrapper module in
``gomod-whereabouts/``, whose go.mod pins the release (and repeats the
project's gogo/protobuf replace) and go.sum its whole dependency graph. Tests
and benchmarks run it next to ours on the same pools. The cache key holds the
version and a digest of go.mod/go.sum, as for the control plane and Multus.

Running it needs a flat file: see :func:`write_flat_file`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from whereabouts_py_dev.gotool import PinnedGoTool

WHEREABOUTS_VERSION = "v0.9.4"
WHEREABOUTS_MODULE = "github.com/k8snetworkplumbingwg/whereabouts"

GO_WHEREABOUTS = PinnedGoTool(
    title="the whereabouts Go plugin",
    binary="whereabouts",
    cache_group="whereabouts-go",
    module=WHEREABOUTS_MODULE,
    package=f"{WHEREABOUTS_MODULE}/cmd",
    version=WHEREABOUTS_VERSION,
    gomod_dir=Path(__file__).with_name("gomod-whereabouts"),
    version_flag=f"{WHEREABOUTS_MODULE}/pkg/version.Version={{version}}",
)


def cache_dir() -> Path:
    return GO_WHEREABOUTS.cache_dir()


def ensure_go_whereabouts(log: Callable[[str], None] | None = None) -> Path:
    """Return the cached Go ``whereabouts`` executable, building it first (only once)."""
    return GO_WHEREABOUTS.ensure(log)


def write_flat_file(directory: Path, kubeconfig: Path, **extra: object) -> Path:
    """Write the flat file the Go plugin insists on; return its path.

    It refuses to start without one holding at least ``datastore`` and
    ``kubernetes.kubeconfig``; point a NAD at it with ``configuration_path``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "whereabouts.conf"
    content: dict[str, object] = {
        "datastore": "kubernetes",
        "kubernetes": {"kubeconfig": str(kubeconfig)},
        **extra,
    }
    path.write_text(json.dumps(content, indent=2) + "\n")
    return path


def namespaced_kubeconfig(source: Path, namespace: str, target: Path) -> Path:
    """A copy of ``source`` whose contexts use ``namespace``.

    The Go plugin keeps its IPPools, reservations and its Lease in the
    namespace of the kubeconfig's context.
    """
    config = json.loads(source.read_text())
    for context in config.get("contexts", []):
        context.setdefault("context", {})["namespace"] = namespace
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(config, indent=2) + "\n")
    target.chmod(0o600)
    return target
