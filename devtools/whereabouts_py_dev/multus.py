"""Build the pinned Multus thin plugin once and cache it by version.

The binary is the real ``multus`` CNI plugin (``cmd/multus`` of
``gopkg.in/k8snetworkplumbingwg/multus-cni.v4``), compiled with this
machine's Go toolchain through the wrapper module in ``gomod-multus/``, whose
go.mod pins the release and go.sum its whole dependency graph. The cache key
holds the version and a digest of go.mod/go.sum, as for the control plane.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Callable
from pathlib import Path

from whereabouts_py_dev.binaries import BuildError, build_once, cache_root, go_build

MULTUS_VERSION = "v4.3.0"
MULTUS_MODULE = "gopkg.in/k8snetworkplumbingwg/multus-cni.v4"
MULTUS_PACKAGE = f"{MULTUS_MODULE}/cmd/multus"
GOMOD_DIR = Path(__file__).with_name("gomod-multus")


def _module_digest() -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((GOMOD_DIR / name).read_bytes())
    return digest.hexdigest()[:12]


def _pinned_version() -> str:
    """The version of Multus that the wrapper's go.mod requires."""
    text = (GOMOD_DIR / "go.mod").read_text()
    match = re.search(rf"^\s*{re.escape(MULTUS_MODULE)}\s+(\S+)", text, re.MULTILINE)
    if match is None:
        raise BuildError(f"{GOMOD_DIR / 'go.mod'} does not require {MULTUS_MODULE}")
    return match.group(1)


def cache_dir() -> Path:
    return cache_root() / "multus" / f"multus-{MULTUS_VERSION}-{_module_digest()}"


def _check_pin() -> None:
    pinned = _pinned_version()
    if pinned != MULTUS_VERSION:
        raise BuildError(
            f"{GOMOD_DIR / 'go.mod'} pins {MULTUS_MODULE} {pinned} but multus.py expects "
            f"{MULTUS_VERSION}; update both together"
        )


def ensure_multus(log: Callable[[str], None] | None = None) -> Path:
    """Return the cached ``multus`` executable, building it first (only once)."""
    emit = log or (lambda line: print(line, file=sys.stderr, flush=True))
    target = cache_dir()

    def build(staging: Path) -> None:
        _check_pin()
        go_build(
            MULTUS_PACKAGE,
            staging / "multus",
            module_dir=GOMOD_DIR,
            ldflags=f"-s -w -X {MULTUS_MODULE}/pkg/multus.version={MULTUS_VERSION}",
            name=f"multus {MULTUS_VERSION}",
            log=emit,
            hint=f"; the Go module proxy must serve {MULTUS_MODULE} and its dependencies",
        )

    build_once(
        target,
        ["multus"],
        build,
        f"devcluster: first run: compiling the Multus thin plugin {MULTUS_VERSION} into "
        f"{target} (about a minute, only once)",
    )
    return target / "multus"
