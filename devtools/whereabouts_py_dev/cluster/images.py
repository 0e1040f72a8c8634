"""The node-level images, written as OCI archives and imported into every node's containerd.

No registry is reachable, so every image a node runs is built here and
imported with ``ctr -n k8s.io images import``:

* ``localhost/pause:<tag>``: the sandbox image, ``pause.c`` of the pinned
  k8s.io/kubernetes module compiled statically with ``gcc``;
* ``localhost/lab-tools:dev``: Debian's static busybox (sh, ip, ping, sleep...).

Each is a single-layer OCI image archive (``oci-layout``, ``index.json`` whose
manifest carries the annotation ``io.containerd.image.name``, ``blobs/``),
written reproducibly (fixed times and owners) and cached under a key that is a
digest of its inputs, so it is rebuilt only when they change.

Other images (the product image, for instance) use the same import: see
``import_image``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from whereabouts_py_dev.binaries import KUBERNETES_VERSION, cache_root

PAUSE_TAG = "3.10.2"  # build/pause/Makefile's TAG in the pinned module
PAUSE_IMAGE = f"localhost/pause:{PAUSE_TAG}"
LAB_TOOLS_IMAGE = "localhost/lab-tools:dev"
BUSYBOX = Path("/bin/busybox")
# The applets linked into lab-tools: enough for pods that sleep, ping and look around.
LAB_TOOLS_APPLETS = (
    "sh", "ip", "ping", "ping6", "sleep", "cat", "ls", "echo", "hostname", "ifconfig",
    "nc", "wget", "grep", "ps", "true", "false", "env", "id", "mkdir", "rm", "touch",
)  # fmt: skip
CONTAINERD_NAME_ANNOTATION = "io.containerd.image.name"
IMPORT_TIMEOUT_S = 300.0
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


class ImageError(RuntimeError):
    """An image could not be built or imported; the message says which and why."""


class ImportTarget(Protocol):
    """What ``import_image`` needs of a node: its name and its containerd socket."""

    @property
    def name(self) -> str: ...

    @property
    def containerd_socket(self) -> Path: ...


@dataclass(frozen=True)
class FileEntry:
    """One entry of an image's layer: a regular file, a directory or a symlink."""

    path: str  # inside the image, without a leading slash
    mode: int = 0o755
    data: bytes | None = None  # a regular file
    link: str | None = None  # a symlink's target
    # A directory when neither data nor link is given.


def _layer_tar(entries: Sequence[FileEntry]) -> bytes:
    """An uncompressed tar with fixed owners and times: same entries, same bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(entries, key=lambda item: item.path):
            info = tarfile.TarInfo(entry.path)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = entry.mode
            if entry.link is not None:
                info.type = tarfile.SYMTYPE
                info.linkname = entry.link
                tar.addfile(info)
            elif entry.data is not None:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            else:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
    return buffer.getvalue()


def _descriptor(media_type: str, blob: bytes) -> dict[str, Any]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
    }


def write_oci_archive(
    archive: Path,
    name: str,
    entries: Sequence[FileEntry],
    config: Mapping[str, Any],
) -> None:
    """Write a single-layer OCI image archive for image ``name`` (e.g. ``localhost/x:tag``).

    ``config`` is the image's runtime configuration (``Entrypoint``, ``Cmd``,
    ``Env``...). The archive is written next to its final path and renamed, so
    a reader never sees half of it.
    """
    layer = _layer_tar(entries)
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    image_config = json.dumps(
        {
            "architecture": _oci_architecture(),
            "os": "linux",
            "config": dict(config),
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(OCI_CONFIG, image_config),
            "layers": [_descriptor(OCI_LAYER, layer)],
        },
        sort_keys=True,
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                **_descriptor(OCI_MANIFEST, manifest),
                "annotations": {
                    CONTAINERD_NAME_ANNOTATION: name,
                    "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
                },
            }
        ],
    }
    files: list[tuple[str, bytes]] = [
        ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
        ("index.json", json.dumps(index, sort_keys=True).encode()),
    ]
    for blob in (image_config, manifest, layer):
        files.append((f"blobs/sha256/{hashlib.sha256(blob).hexdigest()}", blob))
    archive.parent.mkdir(parents=True, exist_ok=True)
    staging = archive.with_name(archive.name + ".part")
    with tarfile.open(staging, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for path, data in files:
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    staging.rename(archive)


def _oci_architecture() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _digest(parts: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:12]


def _images_dir() -> Path:
    return cache_root() / "images"


def pause_source() -> Path:
    """``build/pause/linux/pause.c`` of the pinned k8s.io/kubernetes module (downloaded once)."""
    found = subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0:
        raise ImageError(
            f"go mod download k8s.io/kubernetes@{KUBERNETES_VERSION} failed: "
            f"{(found.stderr or found.stdout).strip()}"
        )
    source = Path(json.loads(found.stdout)["Dir"]) / "build" / "pause" / "linux" / "pause.c"
    if not source.is_file():
        raise ImageError(f"{source} is missing from k8s.io/kubernetes@{KUBERNETES_VERSION}")
    return source


def ensure_pause_image() -> Path:
    """The pause image archive, compiled from the module's pause.c (once per input)."""
    source = pause_source()
    gcc = shutil.which("gcc")
    if gcc is None:
        raise ImageError("gcc is needed to compile pause.c (install gcc and libc6-dev: make setup)")
    compiler = subprocess.run([gcc, "--version"], capture_output=True, check=False).stdout
    key = _digest([source.read_bytes(), compiler, PAUSE_TAG.encode()])
    archive = _images_dir() / f"pause-{PAUSE_TAG}-{key}.tar"
    if archive.is_file():
        return archive
    with tempfile.TemporaryDirectory(prefix="pause-") as work:
        binary = Path(work) / "pause"
        built = subprocess.run(
            [gcc, "-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{PAUSE_TAG}",
             "-o", str(binary), str(source)],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if built.returncode != 0:
            raise ImageError(
                f"compiling {source} statically failed ({built.returncode}): "
                f"{built.stderr.strip()} (needs gcc and libc6-dev: make setup)"
            )
        subprocess.run(["strip", str(binary)], capture_output=True, check=False)
        write_oci_archive(
            archive,
            PAUSE_IMAGE,
            [FileEntry("pause", 0o755, data=binary.read_bytes())],
            {"Entrypoint": ["/pause"], "User": "65535:65535"},
        )
    return archive


def ensure_lab_tools_image() -> Path:
    """The lab-tools image archive: static busybox and its applets (once per busybox)."""
    if not BUSYBOX.is_file():
        raise ImageError(f"{BUSYBOX} is missing (install the Debian package busybox-static)")
    busybox = BUSYBOX.read_bytes()
    if _is_dynamic(BUSYBOX):
        raise ImageError(
            f"{BUSYBOX} is dynamically linked; the image needs Debian's busybox-static"
        )
    key = _digest([busybox, "\n".join(LAB_TOOLS_APPLETS).encode()])
    archive = _images_dir() / f"lab-tools-{key}.tar"
    if archive.is_file():
        return archive
    entries = [FileEntry("bin"), FileEntry("bin/busybox", 0o755, data=busybox)]
    entries += [FileEntry(f"bin/{applet}", 0o777, link="busybox") for applet in LAB_TOOLS_APPLETS]
    entries += [FileEntry(directory) for directory in ("etc", "proc", "sys", "dev", "tmp")]
    write_oci_archive(
        archive,
        LAB_TOOLS_IMAGE,
        entries,
        {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
    )
    return archive


def _is_dynamic(path: Path) -> bool:
    """True when the ELF file has a program interpreter (a dynamic loader)."""
    header = path.read_bytes()[:64]
    if header[:4] != b"\x7fELF":
        return False
    done = subprocess.run(["readelf", "-l", str(path)], capture_output=True, text=True, check=False)
    return "interpreter" in done.stdout


def node_images() -> list[Path]:
    """Every image a node needs from us, built when missing: pause and lab-tools."""
    return [ensure_pause_image(), ensure_lab_tools_image()]


def import_image(archive: Path, nodes: Iterable[ImportTarget]) -> None:
    """Import an OCI image archive into the containerd of every node in ``nodes``.

    ``archive`` is an OCI image layout in a tar file whose ``index.json``
    names the image in the manifest annotation ``io.containerd.image.name``
    (for example ``localhost/whereabouts-py:dev``: that name is what a pod's
    ``image:`` refers to, with ``imagePullPolicy: Never``). ``nodes`` are the
    running cluster's nodes (``Cluster.nodes``, or anything with ``name``
    and ``containerd_socket``). The image lands in containerd's ``k8s.io``
    namespace, where the kubelet finds it, and is unpacked for the default
    snapshotter. Importing the same archive again is harmless. Raises
    ``ImageError`` naming the node and quoting ``ctr`` when an import fails.
    """
    if not archive.is_file():
        raise ImageError(f"no image archive at {archive}")
    # All nodes at once: each import is one ctr process talking to its node's containerd.
    failures = []
    with contextlib.ExitStack() as stack:
        running = []
        for node in nodes:
            output = stack.enter_context(tempfile.TemporaryFile())
            command = [
                "ctr", "--address", node.containerd_socket.name, "--namespace", "k8s.io",
                "images", "import", "--digests", str(archive.resolve()),
            ]  # fmt: skip
            # A socket's path is limited to 107 bytes: connect relative to its directory.
            process = subprocess.Popen(
                command,
                cwd=node.containerd_socket.parent,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            running.append((node, output, process))
        for node, output, process in running:
            try:
                returncode = process.wait(timeout=IMPORT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                returncode = process.wait()
            output.seek(0)
            said = output.read().decode(errors="replace").strip()
            if returncode != 0:
                failures.append(f"node {node.name}'s containerd ({returncode}): {said}")
    if failures:
        raise ImageError(f"importing {archive} failed: " + "; ".join(failures))
