"""Build the pinned Helm CLI once and cache it by version (the chart's tests use it).

The binary is the real ``helm`` (``cmd/helm`` of ``helm.sh/helm/v3``),
compiled with this machine's Go toolchain through the wrapper module in
``gomod-helm/``, whose go.mod pins the release and go.sum its whole
dependency graph; the cache key holds the version and a digest of both, as
for Multus (``multus.py``).
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Callable
from pathlib import Path

from whereabouts_py_dev.binaries import BuildError, build_once, cache_root, go_build

HELM_VERSION = "v3.22.0"
HELM_MODULE = "helm.sh/helm/v3"
HELM_PACKAGE = f"{HELM_MODULE}/cmd/helm"
GOMOD_DIR = Path(__file__).with_name("gomod-helm")


def _module_digest() -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((GOMOD_DIR / name).read_bytes())
    return digest.hexdigest()[:12]


def _pinned_version() -> str:
    """The version of Helm that the wrapper's go.mod requires."""
    text = (GOMOD_DIR / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(HELM_MODULE)}\s+(\S+)", text, re.MULTILINE)
    if match is None:
        raise BuildError(f"{GOMOD_DIR / 'go.mod'} does not require {HELM_MODULE}")
    return match.group(1)


def cache_dir() -> Path:
    return cache_root() / "helm" / f"helm-{HELM_VERSION}-{_module_digest()}"


def ensure_helm(log: Callable[[str], None] | None = None) -> Path:
    """Return the cached ``helm`` executable, building it first (only once)."""
    emit = log or (lambda line: print(line, file=sys.stderr, flush=True))
    target = cache_dir()

    def build(staging: Path) -> None:
        pinned = _pinned_version()
        if pinned != HELM_VERSION:
            raise BuildError(
                f"{GOMOD_DIR / 'go.mod'} pins {HELM_MODULE} {pinned} but helm.py expects "
                f"{HELM_VERSION}; update both together"
            )
        go_build(
            HELM_PACKAGE,
            staging / "helm",
            module_dir=GOMOD_DIR,
            ldflags=f"-s -w -X {HELM_MODULE}/internal/version.version={HELM_VERSION}",
            name=f"helm {HELM_VERSION}",
            log=emit,
            hint=f"; the Go module proxy must serve {HELM_MODULE} and its dependencies",
        )

    build_once(
        target,
        ["helm"],
        build,
        f"devcluster: first run: compiling Helm {HELM_VERSION} into {target} "
        "(a few minutes, only once)",
    )
    return target / "helm"
