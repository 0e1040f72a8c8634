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

import hashlib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from whereabouts_py_dev.binaries import BuildError, build_once, cache_root, go_build

WHEREABOUTS_VERSION = "v0.9.4"
WHEREABOUTS_MODULE = "github.com/k8snetworkplumbingwg/whereabouts"
WHEREABOUTS_PACKAGE = f"{WHEREABOUTS_MODULE}/cmd"
GOMOD_DIR = Path(__file__).with_name("gomod-whereabouts")


def _module_digest() -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((GOMOD_DIR / name).read_bytes())
    return digest.hexdigest()[:12]


def _pinned_version() -> str:
    """The version of whereabouts that the wrapper's go.mod requires."""
    text = (GOMOD_DIR / "go.mod").read_text()
    match = re.search(rf"^\s*{re.escape(WHEREABOUTS_MODULE)}\s+(\S+)", text, re.MULTILINE)
    if match is None:
        raise BuildError(f"{GOMOD_DIR / 'go.mod'} does not require {WHEREABOUTS_MODULE}")
    return match.group(1)


def cache_dir() -> Path:
    return cache_root() / "whereabouts-go" / f"whereabouts-{WHEREABOUTS_VERSION}-{_module_digest()}"


def _check_pin() -> None:
    pinned = _pinned_version()
    if pinned != WHEREABOUTS_VERSION:
        raise BuildError(
            f"{GOMOD_DIR / 'go.mod'} pins {WHEREABOUTS_MODULE} {pinned} but goplugin.py expects "
            f"{WHEREABOUTS_VERSION}; update both together"
        )


def ensure_go_whereabouts(log: Callable[[str], None] | None = None) -> Path:
    """Return the cached Go ``whereabouts`` executable, building it first (only once)."""
    emit = log or (lambda line: print(line, file=sys.stderr, flush=True))
    target = cache_dir()

    def build(staging: Path) -> None:
        _check_pin()
        go_build(
            WHEREABOUTS_PACKAGE,
            staging / "whereabouts",
            module_dir=GOMOD_DIR,
            ldflags=f"-s -w -X {WHEREABOUTS_MODULE}/pkg/version.Version={WHEREABOUTS_VERSION}",
            name=f"whereabouts (Go) {WHEREABOUTS_VERSION}",
            log=emit,
            hint=f"; the Go module proxy must serve {WHEREABOUTS_MODULE} and its dependencies",
        )

    build_once(
        target,
        ["whereabouts"],
        build,
        f"devcluster: first run: compiling the whereabouts Go plugin {WHEREABOUTS_VERSION} "
        f"into {target} (about a minute, only once)",
    )
    return target / "whereabouts"


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
