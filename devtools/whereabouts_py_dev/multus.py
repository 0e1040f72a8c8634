"""Build the pinned Multus thin plugin once and cache it by version.

The binary is the real ``multus`` CNI plugin (``cmd/multus`` of
``gopkg.in/k8snetworkplumbingwg/multus-cni.v4``), compiled with this
machine's Go toolchain through the wrapper module in ``gomod-multus/``, whose
go.mod pins the release and go.sum its whole dependency graph. The cache key
holds the version and a digest of go.mod/go.sum (``gotool.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from whereabouts_py_dev.gotool import PinnedGoTool

MULTUS_VERSION = "v4.3.0"
MULTUS_MODULE = "gopkg.in/k8snetworkplumbingwg/multus-cni.v4"

MULTUS = PinnedGoTool(
    title="the Multus thin plugin",
    binary="multus",
    cache_group="multus",
    module=MULTUS_MODULE,
    package=f"{MULTUS_MODULE}/cmd/multus",
    version=MULTUS_VERSION,
    gomod_dir=Path(__file__).with_name("gomod-multus"),
    version_flag=f"{MULTUS_MODULE}/pkg/multus.version={{version}}",
)


def cache_dir() -> Path:
    return MULTUS.cache_dir()


def ensure_multus(log: Callable[[str], None] | None = None) -> Path:
    """Return the cached ``multus`` executable, building it first (only once)."""
    return MULTUS.ensure(log)
