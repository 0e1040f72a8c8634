"""Build the pinned Multus thin plugin once and cache it by version.

The binary is the real ``multus`` CNI plugin (``cmd/multus`` of
``gopkg.in/k8snetworkplumbingwg/multus-cni.v4``), compiled with this
machine's Go toolchain through the wrapper module in ``gomod-multus/``, whose
go.mod pins the release and go.sum its whole dependency graph. The cache key
holds the version and a digest of go.mod/go.sum, as for the control plane.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from whereabouts_py.devcluster.binaries import BuildError, cache_root

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


def _build(out: Path, log: Callable[[str], None]) -> None:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            f"the Go toolchain ('go') is not on PATH; it is needed once to build Multus "
            f"{MULTUS_VERSION} ({MULTUS_PACKAGE}); install Go >= 1.26"
        )
    pinned = _pinned_version()
    if pinned != MULTUS_VERSION:
        raise BuildError(
            f"{GOMOD_DIR / 'go.mod'} pins {MULTUS_MODULE} {pinned} but multus.py expects "
            f"{MULTUS_VERSION}; update both together"
        )
    ldflags = f"-s -w -X {MULTUS_MODULE}/pkg/multus.version={MULTUS_VERSION}"
    command = [go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(out), MULTUS_PACKAGE]
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=readonly -buildvcs=false")
    started = time.monotonic()
    log(f"devcluster: building multus {MULTUS_VERSION} ({MULTUS_PACKAGE}) ...")
    result = subprocess.run(
        command, cwd=GOMOD_DIR, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-25:])
        raise BuildError(
            f"building multus {MULTUS_VERSION} from {MULTUS_PACKAGE} failed "
            f"(exit {result.returncode}); the Go module proxy must serve {MULTUS_MODULE} "
            f"and its dependencies:\n{tail}"
        )
    log(f"devcluster: built multus in {time.monotonic() - started:.0f}s")


def ensure_multus(log: Callable[[str], None] | None = None) -> Path:
    """Return the cached ``multus`` executable, building it first (only once)."""
    emit = log or (lambda line: print(line, file=sys.stderr, flush=True))
    target = cache_dir()
    binary = target / "multus"
    if binary.is_file():
        return binary
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / (target.name + ".lock")
    with lock_path.open("w") as lock:
        # Another process may be building the same version; wait for it.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file():
            return binary
        emit(
            f"devcluster: first run: compiling the Multus thin plugin {MULTUS_VERSION} into "
            f"{target} (about a minute, only once)"
        )
        staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        try:
            _build(staging / "multus", emit)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return binary
