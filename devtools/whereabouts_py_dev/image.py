"""Build the product image ``localhost/whereabouts-py:dev`` here, with no registry.

The repository's Dockerfile is built with buildah, its ``BASE_IMAGE`` argument
pointing at a base made here from Debian packages:

1. **The base** (``localhost/whereabouts-py-base:<digest>``): a minimal Debian
   bookworm root file system made by ``mmdebstrap`` from Debian's archive
   (the host's apt sources), with python3 (3.11), venv, pip, libpython (which
   PyInstaller bundles into the shim), passwd (``useradd``) and CA
   certificates, committed as a one-layer image.
2. **The product**: ``buildah bud`` of the Dockerfile with that base. Its RUN
   steps reach PyPI and Debian over the host's network; the host's CA bundle
   (which may hold a proxy's CA) is bind-mounted over the base's own in those
   steps only (``-v``; Debian's pip reads the system bundle), so nothing of
   the host ends up in the image. Only files the base already has are mounted:
   a bind mount leaves an empty file where there was none. Layers are cached
   (``--layers``): the Dockerfile installs the dependencies before it copies
   the sources, so a change to the sources alone redoes only the last steps.
3. **The archive**: ``buildah push`` to an OCI archive, whose ``index.json``
   then also names the image in the annotation ``io.containerd.image.name``,
   which ``ctr images import`` uses (``cluster.images.import_image``).

Everything lives under ``<cache>/images`` (``binaries.cache_root``): the
archive ``whereabouts-py-<digest>.tar`` and a containers storage of its own
(``storage/``, overlay driver), so the host's default storage is untouched.
The digest covers the Dockerfile, pyproject.toml, README.md, the
``whereabouts_py`` sources and the base recipe: the image is rebuilt only when
one of them changes. Builds run as root with runc (crun refuses this machine's
hybrid cgroup v1/v2 layout).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from whereabouts_py_dev.binaries import cache_root

PRODUCT_IMAGE = "localhost/whereabouts-py:dev"
BASE_REPOSITORY = "localhost/whereabouts-py-base"
CONTAINERD_NAME_ANNOTATION = "io.containerd.image.name"
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
# What the Dockerfile copies or reads; the image depends on nothing else of the tree.
CONTEXT_FILES = ("Dockerfile", "pyproject.toml", "README.md")
CONTEXT_PACKAGE = "whereabouts_py"

BASE_SUITE = "bookworm"
# python (python-is-python3: the Dockerfile runs `python`), venv and pip; libpython
# for PyInstaller; passwd for useradd; certificates for pip.
BASE_PACKAGES = (
    "python3", "python3-venv", "python3-pip", "python-is-python3", "libpython3.11",
    "ca-certificates", "passwd",
)  # fmt: skip
BASE_DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
)
BASE_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_APT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Bound over the base's own bundle in the build's RUN steps (never copied into the image).
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Archives kept besides the newest: a process may still be importing the previous one.
_KEEP_ARCHIVES = 2
_BUILD_TIMEOUT_S = 3600
_KEEP_CACHE = "1h"  # unnamed images (cached layers, older builds) younger than this stay


class ImageBuildError(RuntimeError):
    """The product image could not be built; the message says which step and why."""


def images_dir() -> Path:
    return cache_root() / "images"


def storage_options() -> list[str]:
    """The global options that select this tooling's own containers storage."""
    directory = images_dir()
    return [
        "--root",
        str(directory / "storage"),
        "--runroot",
        str(directory / "storage-run"),
        "--storage-driver",
        "overlay",
    ]


def _runc() -> str:
    runc = shutil.which("runc") or ("/usr/sbin/runc" if Path("/usr/sbin/runc").exists() else None)
    if runc is None:
        raise ImageBuildError("runc is not installed (Debian package runc; `make image` adds it)")
    return runc


def buildah_command() -> list[str]:
    buildah = shutil.which("buildah")
    if buildah is None:
        raise ImageBuildError("buildah is not installed (Debian package buildah; `make image`)")
    return [buildah, *storage_options()]


def podman_command() -> list[str]:
    """``podman`` on this tooling's storage, with runc and cgroupfs (cgroup v1 here).

    Containers also need ``--ulimit`` values no higher than this process's own
    (``run_limits``): root here lacks CAP_SYS_RESOURCE, and podman's defaults
    raise RLIMIT_NOFILE and RLIMIT_NPROC, which runc is then refused.
    """
    podman = shutil.which("podman")
    if podman is None:
        raise ImageBuildError("podman is not installed (Debian package podman)")
    return [podman, *storage_options(), "--runtime", _runc(), "--cgroup-manager", "cgroupfs"]


def run_limits() -> list[str]:
    """``podman run`` options that keep the open-files and process limits as they are."""
    import resource

    options: list[str] = []
    for name, limit in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        _soft, hard = resource.getrlimit(limit)
        value = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
        options += ["--ulimit", f"{name}={value}:{value}"]
    return options


def _base_sources() -> str:
    return HOST_APT_SOURCES.read_text() if HOST_APT_SOURCES.is_file() else DEFAULT_MIRROR


def base_recipe() -> dict[str, object]:
    """Everything the base image is made from; its digest names the base."""
    return {
        "suite": BASE_SUITE,
        "variant": "minbase",
        "packages": list(BASE_PACKAGES),
        "dpkg": list(BASE_DPKG_OPTIONS),
        "sources": _base_sources(),
        "env": BASE_ENV,
    }


def base_digest() -> str:
    return hashlib.sha256(json.dumps(base_recipe(), sort_keys=True).encode()).hexdigest()[:12]


def base_image() -> str:
    return f"{BASE_REPOSITORY}:{base_digest()}"


def _context_paths(root: Path) -> list[Path]:
    """The files of the build context, relative to ``root``, in a stable order."""
    paths = [Path(name) for name in CONTEXT_FILES]
    for path in sorted((root / CONTEXT_PACKAGE).rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and "__pycache__" not in relative.parts and path.suffix != ".pyc":
            paths.append(relative)
    return paths


def product_digest(root: Path = REPOSITORY_ROOT) -> str:
    """Digest of the Dockerfile, pyproject.toml, README.md, the sources and the base recipe."""
    digest = hashlib.sha256()
    digest.update(f"base {base_digest()}\0".encode())
    for relative in _context_paths(root):
        data = (root / relative).read_bytes()
        digest.update(f"{relative.as_posix()} {len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:12]


def product_archive(root: Path = REPOSITORY_ROOT) -> Path:
    """Where the archive of the current sources is (or will be) written."""
    return images_dir() / f"whereabouts-py-{product_digest(root)}.tar"


def _run(
    command: Sequence[str], step: str, log: Callable[[str], None], timeout: float | None = None
) -> str:
    log(f"image: {step} ...")
    started = time.monotonic()
    try:
        done = subprocess.run(
            list(command),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout or _BUILD_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as error:
        raise ImageBuildError(f"{step}: timed out after {error.timeout:.0f}s") from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr + done.stdout).strip().splitlines()[-25:])
        raise ImageBuildError(f"{step} failed (exit {done.returncode}):\n{tail}")
    log(f"image: {step}: done in {time.monotonic() - started:.0f}s")
    return done.stdout


def _image_exists(name: str) -> bool:
    done = subprocess.run(
        [*buildah_command(), "inspect", "--type", "image", name],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def ensure_base_image(log: Callable[[str], None]) -> str:
    """Make the Debian base image unless its recipe's image is already in storage."""
    name = base_image()
    if _image_exists(name):
        return name
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise ImageBuildError("mmdebstrap is not installed (Debian package mmdebstrap)")
    images_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="base.", dir=images_dir()) as scratch:
        sources = Path(scratch) / "debian.sources"
        mirror = _base_sources()
        if HOST_APT_SOURCES.is_file():
            sources.write_text(mirror)
            mirror = str(sources)
        rootfs = Path(scratch) / "rootfs.tar"
        _run(
            [
                mmdebstrap,
                "--mode=root",
                "--variant=minbase",
                "--format=tar",
                f"--include={','.join(BASE_PACKAGES)}",
                *(f"--dpkgopt={option}" for option in BASE_DPKG_OPTIONS),
                BASE_SUITE,
                str(rootfs),
                mirror,
            ],
            f"mmdebstrap: Debian {BASE_SUITE} with {', '.join(BASE_PACKAGES)}",
            log,
        )
        buildah = buildah_command()
        container = _run([*buildah, "from", "scratch"], "buildah from scratch", log).strip()
        try:
            _run([*buildah, "add", container, str(rootfs), "/"], "buildah add rootfs", log)
            _run(
                [*buildah, "config", "--env", BASE_ENV, "--cmd", "/bin/bash", container],
                "buildah config",
                log,
            )
            _run([*buildah, "commit", "--rm", container, name], f"buildah commit {name}", log)
        except BaseException:
            subprocess.run([*buildah, "rm", container], capture_output=True, check=False)
            raise
    return name


def _stage_context(root: Path, context: Path) -> None:
    for relative in _context_paths(root):
        target = context / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, target)


def build_arguments(base: str, context: Path, tag: str = PRODUCT_IMAGE) -> list[str]:
    """``buildah bud`` arguments for the Dockerfile in ``context`` on ``base``."""
    mounts: list[str] = []
    if HOST_CA_BUNDLE.is_file():
        mounts += ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    return [
        "bud",
        "--runtime",
        _runc(),
        "--network",
        "host",
        # Cached layers: a change to the sources alone reuses the dependencies.
        "--layers",
        *mounts,
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--tag",
        tag,
        "--file",
        str(context / "Dockerfile"),
        str(context),
    ]


def name_for_containerd(archive: Path, name: str = PRODUCT_IMAGE) -> None:
    """Add ``io.containerd.image.name`` to every manifest of the archive's index.json."""
    rewritten = archive.with_name(archive.name + ".named")
    with tarfile.open(archive) as source, tarfile.open(rewritten, "w") as target:
        for member in source:
            data = source.extractfile(member) if member.isfile() else None
            if member.name.lstrip("./") == "index.json" and data is not None:
                index = json.loads(data.read())
                for manifest in index.get("manifests", []):
                    manifest.setdefault("annotations", {})[CONTAINERD_NAME_ANNOTATION] = name
                payload = json.dumps(index).encode()
                member.size = len(payload)
                target.addfile(member, io.BytesIO(payload))
            else:
                target.addfile(member, data)
    os.replace(rewritten, archive)


def _prune_archives(keep: Path) -> None:
    archives = sorted(
        images_dir().glob("whereabouts-py-*.tar"), key=lambda path: path.stat().st_mtime
    )
    old = [path for path in archives if path != keep]
    for path in old[: max(0, len(old) - (_KEEP_ARCHIVES - 1))]:
        path.unlink(missing_ok=True)


def ensure_product_image(log: Callable[[str], None] | None = None) -> Path:
    """The OCI archive of ``localhost/whereabouts-py:dev`` for the current sources.

    Built (base image, Dockerfile, archive) only when no archive of the same
    inputs exists; a lock serialises concurrent callers. The inputs are copied
    first and both digested and built from that copy, so an edit during the
    build never gives an archive a name it does not match. The archive is what
    nodes import (``cluster.images.import_image``); ``load_product_image`` puts
    the same image into this tooling's storage for podman.
    """
    emit = log or (lambda line: print(line, file=sys.stderr, flush=True))
    images_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="context.", dir=images_dir()) as staged:
        context = Path(staged)
        _stage_context(REPOSITORY_ROOT, context)
        archive = product_archive(context)
        if archive.is_file():
            return archive
        with (images_dir() / "whereabouts-py.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it: wait
            if not archive.is_file():
                _build_product(context, archive, emit)
    return archive


def _build_product(context: Path, archive: Path, emit: Callable[[str], None]) -> None:
    started = time.monotonic()
    emit(f"image: building {PRODUCT_IMAGE} into {archive} (minutes, once per change)")
    base = ensure_base_image(emit)
    buildah = buildah_command()
    _run(
        [*buildah, *build_arguments(base, context)],
        f"buildah bud {PRODUCT_IMAGE} (BASE_IMAGE={base})",
        emit,
    )
    partial = archive.with_name(archive.name + ".partial")
    partial.unlink(missing_ok=True)
    _run(
        [*buildah, "push", "--quiet", PRODUCT_IMAGE, f"oci-archive:{partial}:{PRODUCT_IMAGE}"],
        "buildah push to an OCI archive",
        emit,
    )
    name_for_containerd(partial)
    os.replace(partial, archive)
    # Older builds of the tag are now unnamed; keep an hour of them (the layer cache:
    # a build every few minutes leaves about 200 MB each).
    subprocess.run(
        [*podman_command(), "image", "prune", "--force", "--filter", f"until={_KEEP_CACHE}"],
        capture_output=True,
        check=False,
    )
    _prune_archives(archive)
    emit(f"image: {PRODUCT_IMAGE} ready in {time.monotonic() - started:.0f}s: {archive}")


def archive_image_id(archive: Path) -> str:
    """The image ID (config digest, hex) of the archive's only manifest."""
    with tarfile.open(archive) as tar:

        def read(name: str) -> bytes:
            member = tar.extractfile(name)
            if member is None:
                raise ImageBuildError(f"{archive}: {name} is missing")
            return member.read()

        (entry,) = json.loads(read("index.json"))["manifests"]
        manifest = json.loads(read("blobs/" + entry["digest"].replace(":", "/")))
    digest: str = manifest["config"]["digest"]
    return digest.removeprefix("sha256:")


def load_product_image(archive: Path, log: Callable[[str], None] | None = None) -> str:
    """Make ``localhost/whereabouts-py:dev`` in this tooling's storage the archive's image."""
    emit = log or (lambda line: print(line, file=sys.stderr, flush=True))
    wanted = archive_image_id(archive)
    done = subprocess.run(
        [*buildah_command(), "inspect", "--type", "image", "--format", "{{.FromImageID}}",
         PRODUCT_IMAGE],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if done.returncode != 0 or done.stdout.strip() != wanted:
        buildah = buildah_command()
        _run([*buildah, "pull", "--quiet", f"oci-archive:{archive}"], f"load {archive}", emit)
        _run([*buildah, "tag", wanted, PRODUCT_IMAGE], f"tag {PRODUCT_IMAGE}", emit)
    return wanted


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m whereabouts_py_dev.image",
        description=f"build {PRODUCT_IMAGE} from the Dockerfile (no registry) as an OCI archive",
    )
    parser.parse_args(argv)
    try:
        print(ensure_product_image())
    except ImageBuildError as error:
        print(f"image: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
