"""Build the pinned node binaries once: kubelet, kube-controller-manager, kube-scheduler.

They come from the same k8s.io/kubernetes release as the control plane, through
their own wrapper module (``gomod-node/``): its go.mod pins the same versions as
``gomod/`` and its go.sum also covers what the kubelet needs, so the control
plane's cache key (a digest of ``gomod/``) is untouched. The set is cached in
its own directory, keyed by version and by a digest of ``gomod-node/``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from whereabouts_py_dev.binaries import (
    KUBERNETES_VERSION,
    build_kubernetes_set,
    cache_root,
    module_digest,
)

GOMOD_DIR = Path(__file__).resolve().parents[1] / "gomod-node"

# The smallest first, so a broken toolchain shows up before the kubelet's minutes.
_TARGETS: tuple[tuple[str, str], ...] = (
    ("kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler"),
    ("kube-controller-manager", "k8s.io/kubernetes/cmd/kube-controller-manager"),
    ("kubelet", "k8s.io/kubernetes/cmd/kubelet"),
)


@dataclass(frozen=True)
class NodeBinaries:
    """Paths of one cached, complete set of node and scheduling binaries."""

    directory: Path

    @property
    def kubelet(self) -> Path:
        return self.directory / "kubelet"

    @property
    def kube_controller_manager(self) -> Path:
        return self.directory / "kube-controller-manager"

    @property
    def kube_scheduler(self) -> Path:
        return self.directory / "kube-scheduler"


def cache_dir() -> Path:
    return cache_root() / "node" / f"k8s-{KUBERNETES_VERSION}-{module_digest(GOMOD_DIR)}"


def ensure_node_binaries(log: Callable[[str], None] | None = None) -> NodeBinaries:
    """Return the cached node binaries, building the missing set first (only once)."""
    target = cache_dir()
    build_kubernetes_set(
        target,
        _TARGETS,
        GOMOD_DIR,
        what="node binaries",
        announce=f"devcluster: first run: compiling kubelet, kube-controller-manager and "
        f"kube-scheduler {KUBERNETES_VERSION} into {target} (about 10 minutes, only once)",
        log=log,
    )
    return NodeBinaries(target)
