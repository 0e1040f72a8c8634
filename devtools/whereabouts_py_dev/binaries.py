"""Build the pinned control-plane binaries once and cache them by version.

kube-apiserver, kubectl and etcd are compiled with this machine's Go toolchain
from the Go module proxy through the wrapper module in ``gomod/``. The cache
key holds the pinned versions and a digest of go.mod/go.sum, so changing a pin
builds a new set while older sets stay usable.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.8"

GOMOD_DIR = Path(__file__).with_name("gomod")

# (binary name, Go package path) in build order: the smallest first, so a
# broken toolchain shows up quickly.
_TARGETS: tuple[tuple[str, str], ...] = (
    ("etcd", "go.etcd.io/etcd/server/v3"),
    ("kubectl", "k8s.io/kubernetes/cmd/kubectl"),
    ("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
)


class BuildError(RuntimeError):
    """A control-plane binary could not be built; the message says which and why."""


@dataclass(frozen=True)
class Binaries:
    """Paths of one cached, complete set of control-plane binaries."""

    directory: Path

    @property
    def kube_apiserver(self) -> Path:
        return self.directory / "kube-apiserver"

    @property
    def kubectl(self) -> Path:
        return self.directory / "kubectl"

    @property
    def etcd(self) -> Path:
        return self.directory / "etcd"


def cache_root() -> Path:
    """Where built binaries live: ``$WHEREABOUTS_PY_CACHE`` or ``~/.cache/whereabouts-py``."""
    configured = os.environ.get("WHEREABOUTS_PY_CACHE")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "whereabouts-py"


def module_digest(gomod_dir: Path) -> str:
    """The first 12 hex digits of sha256 over a wrapper module's go.mod and go.sum."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((gomod_dir / name).read_bytes())
    return digest.hexdigest()[:12]


def cache_dir() -> Path:
    key = f"k8s-{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}-{module_digest(GOMOD_DIR)}"
    return cache_root() / "controlplane" / key


def kubernetes_ldflags() -> str:
    """The linker flags that stamp the pinned Kubernetes version into its binaries."""
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={KUBERNETES_VERSION}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    return " ".join(flags)


def go_build(
    package: str,
    out: Path,
    *,
    module_dir: Path,
    ldflags: str,
    name: str,
    log: Callable[[str], None],
    hint: str = "",
) -> None:
    """``go build`` one main package of a wrapper module; BuildError says what failed."""
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            f"the Go toolchain ('go') is not on PATH; it is needed once to build {name} "
            "(install Go >= 1.26)"
        )
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=readonly -buildvcs=false")
    command = [go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(out), package]
    started = time.monotonic()
    log(f"devcluster: building {name} ({package}) ...")
    result = subprocess.run(
        command, cwd=module_dir, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-25:])
        raise BuildError(
            f"building {name} from {package} failed (exit {result.returncode}){hint}:\n{tail}"
        )
    log(f"devcluster: built {name} in {time.monotonic() - started:.0f}s")


def build_once(
    target: Path, files: Sequence[str], build: Callable[[Path], None], announce: str
) -> None:
    """Fill ``target`` with ``files`` by ``build(staging_dir)`` unless they are all there.

    A lock serialises concurrent first runs; the set appears at once (rename),
    so a half-built set is never used.
    """
    if all((target / name).is_file() for name in files):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / (target.name + ".lock")
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it: wait
        if all((target / name).is_file() for name in files):
            return
        print(announce, file=sys.stderr, flush=True)
        staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        try:
            build(staging)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


def build_kubernetes_set(
    target: Path,
    targets: tuple[tuple[str, str], ...],
    gomod_dir: Path,
    *,
    what: str,
    announce: str,
    log: Callable[[str], None] | None = None,
) -> None:
    """Build ``targets`` (name, package) of the pinned release into ``target``, once."""
    emit = log or (lambda line: print(line, file=sys.stderr, flush=True))

    def build(staging: Path) -> None:
        started = time.monotonic()
        for name, package in targets:
            go_build(
                package,
                staging / name,
                module_dir=gomod_dir,
                ldflags=kubernetes_ldflags(),
                name=name,
                log=emit,
            )
        emit(f"devcluster: {what} ready in {time.monotonic() - started:.0f}s")

    build_once(target, [name for name, _ in targets], build, announce)


def ensure_binaries(log: Callable[[str], None] | None = None) -> Binaries:
    """Return the cached binaries, building the missing set first (only once)."""
    target = cache_dir()
    build_kubernetes_set(
        target,
        _TARGETS,
        GOMOD_DIR,
        what="control-plane binaries",
        announce=f"devcluster: first run: compiling kube-apiserver {KUBERNETES_VERSION}, "
        f"kubectl and etcd {ETCD_VERSION} into {target} (takes minutes, only once)",
        log=log,
    )
    return Binaries(target)
