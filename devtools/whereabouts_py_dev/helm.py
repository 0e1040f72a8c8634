"""Build the pinned Helm CLI once and cache it by version (the chart's tests use it).

The binary is the real ``helm`` (``cmd/helm`` of ``helm.sh/helm/v3``),
compiled with this machine's Go toolchain through the wrapper module in
``gomod-helm/``, whose go.mod pins the release and go.sum its whole
dependency graph; the cache key holds the version and a digest of both, as
for Multus (``gotool.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from whereabouts_py_dev.gotool import PinnedGoTool

HELM_VERSION = "v3.22.0"
HELM_MODULE = "helm.sh/helm/v3"

HELM = PinnedGoTool(
    title="Helm",
    binary="helm",
    cache_group="helm",
    module=HELM_MODULE,
    package=f"{HELM_MODULE}/cmd/helm",
    version=HELM_VERSION,
    gomod_dir=Path(__file__).with_name("gomod-helm"),
    version_flag=f"{HELM_MODULE}/internal/version.version={{version}}",
    duration="a few minutes",
)


def cache_dir() -> Path:
    return HELM.cache_dir()


def ensure_helm(log: Callable[[str], None] | None = None) -> Path:
    """Return the cached ``helm`` executable, building it first (only once)."""
    return HELM.ensure(log)
