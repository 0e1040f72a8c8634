"""Install the CNI plugin executable ``<bin-dir>/<name>`` (``whereabouts`` by default).

The runtime executes the plugin on the node, outside any container, so what is
installed must run there. Two forms:

**The self-contained shim** (``bundle``, what the image installs): a bundle
made by ``whereabouts-py build-shim`` (``bundle.py``), kept in the image at
``/opt/whereabouts-py/shim`` (``IMAGE_BUNDLE``). It carries its own libpython
and stdlib modules; the node needs no Python and no files of the image, only
glibc (no older than the build's libpython needs: 2.35 for a Debian 12 build)
and libz, which PyInstaller's loader links. It is installed as

    <bin-dir>/whereabouts-py.d/<digest>/   a copy of the bundle, named by its content
    <bin-dir>/<name>                       symlink -> whereabouts-py.d/<digest>/whereabouts

Runtimes find a plugin by ``stat`` (symlinks followed) and execute it by that
path, so the shim still learns its ``ipam.type`` from the link's name. The
copy is written to a temporary directory beside the others and renamed when
complete, then the link is replaced by rename, so a running CNI call never
sees a half-written plugin. The bundle's loader resolves its own path, so a
call that started keeps using the folder it started from; installing keeps
the folder the link pointed to before and removes older ones. Reinstalling an
unchanged bundle only checks its digest.

**A script** (no bundle: development and tests): a tiny file whose shebang
starts this Python interpreter in isolated mode without ``site`` (``-IS``: no
site-packages scan, no PYTHON* variables, no script directory on
``sys.path``), which keeps each call's start-up short; it puts the folder
holding ``whereabouts_py`` on ``sys.path`` itself. It works only where this
interpreter and this package exist at the same paths, i.e. not on a node from
inside a container. Linux passes everything after the interpreter in a
shebang as one argument, hence the flags in one word.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path

import whereabouts_py
from whereabouts_py.cni.nodeconf import atomic_write

IMAGE_BUNDLE = Path("/opt/whereabouts-py/shim")
BUNDLE_STORE = "whereabouts-py.d"
# Must match bundle.py (not imported: installing needs none of the build code).
BUNDLE_EXECUTABLE = "whereabouts"
BUNDLE_MANIFEST = "whereabouts-py-shim.json"
_DIGEST_CHARS = 16
_ABANDONED_AFTER_S = 3600  # a temporary copy this old belongs to an install that died

_SHEBANG_MAX = 255  # Linux reads at most 256 bytes of a "#!" line, newline included

_SCRIPT = """\
#!{python} -IS
# whereabouts-py CNI IPAM plugin, installed by `whereabouts-py install-cni`.
import sys
sys.path.insert(0, {package_parent!r})
from whereabouts_py.cni.shim import run
run()
"""


def install_cni(bin_dir: Path, name: str = "whereabouts", bundle: Path | None = None) -> Path:
    """Install ``bin_dir/name`` atomically (the bundle if given, else the script) and return it."""
    if not name or "/" in name or name in (".", "..") or name == BUNDLE_STORE:
        raise ValueError(f"invalid plugin file name {name!r}")
    if bundle is not None:
        return _install_bundle(bin_dir, name, bundle)
    return _install_script(bin_dir, name)


def image_bundle() -> Path | None:
    """The image's prebuilt shim bundle, if this runs in the image."""
    return IMAGE_BUNDLE if (IMAGE_BUNDLE / BUNDLE_MANIFEST).is_file() else None


def _install_script(bin_dir: Path, name: str) -> Path:
    python = sys.executable
    if not python or any(char.isspace() for char in python):
        raise ValueError(f"cannot use {python!r} in a #! line: it is empty or has whitespace")
    package_parent = str(Path(whereabouts_py.__file__).resolve().parent.parent)
    script = _SCRIPT.format(python=python, package_parent=package_parent)
    if len(script.partition("\n")[0]) >= _SHEBANG_MAX:
        raise ValueError(f"the interpreter path {python!r} is too long for a #! line")

    target = bin_dir / name
    atomic_write(target, script, mode=0o755, if_changed=False)  # always a new file
    return target


def _install_bundle(bin_dir: Path, name: str, bundle: Path) -> Path:
    _check_bundle(bundle)
    digest = _digest(bundle)[:_DIGEST_CHARS]
    store = bin_dir / BUNDLE_STORE
    store.mkdir(parents=True, exist_ok=True)
    os.chmod(store, 0o755)
    version = store / digest
    if version.is_dir() and _digest(version)[:_DIGEST_CHARS] != digest:
        os.rename(version, store / f".stale-{digest}-{os.getpid()}")  # damaged: copy anew
    if not version.is_dir():
        _copy_into_store(bundle, version)

    target = bin_dir / name
    previous = _store_entry(bin_dir, target)
    link = bin_dir / f".{name}.{os.getpid()}.link"
    link.unlink(missing_ok=True)
    os.symlink(f"{BUNDLE_STORE}/{digest}/{BUNDLE_EXECUTABLE}", link)
    try:
        os.replace(link, target)
    except BaseException:
        link.unlink(missing_ok=True)
        raise
    _fsync_directory(bin_dir)
    _prune(bin_dir, store, keep={digest, previous})
    return target


def _check_bundle(bundle: Path) -> None:
    manifest = bundle / BUNDLE_MANIFEST
    executable = bundle / BUNDLE_EXECUTABLE
    if not manifest.is_file() or not os.access(executable, os.X_OK):
        raise ValueError(
            f"--bundle {bundle}: not a shim bundle (needs {BUNDLE_MANIFEST} and an executable"
            f" {BUNDLE_EXECUTABLE}); make one with `whereabouts-py build-shim --out DIR`"
        )
    try:
        json.loads(manifest.read_text())
    except ValueError as error:
        raise ValueError(f"--bundle {bundle}: {manifest} is not valid JSON: {error}") from None


def _digest(root: Path) -> str:
    """SHA-256 over the tree's names, kinds, execute bits, file contents and link targets."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            digest.update(f"link {relative} -> {os.readlink(path)}\0".encode())
        elif stat.S_ISDIR(mode):
            digest.update(f"dir {relative}\0".encode())
        else:
            executable = bool(mode & stat.S_IXUSR)
            digest.update(f"file {relative} {executable} {path.stat().st_size}\0".encode())
            with path.open("rb") as file:
                while chunk := file.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


def _copy_into_store(bundle: Path, version: Path) -> None:
    temporary = Path(tempfile.mkdtemp(dir=version.parent, prefix=".tmp-"))
    try:
        shutil.copytree(bundle, temporary, symlinks=True, dirs_exist_ok=True)
        os.chmod(temporary, 0o755)
        _fsync_tree(temporary)
        try:
            os.rename(temporary, version)
        except OSError:
            if not version.is_dir():  # else another installer renamed the same bundle first
                raise
            shutil.rmtree(temporary)
        _fsync_directory(version.parent)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _store_entry(bin_dir: Path, path: Path) -> str | None:
    """The store folder that the symlink ``path`` points into, if it is one of ours."""
    try:
        link = os.readlink(path)
    except OSError:
        return None
    parts = Path(link).parts
    if len(parts) == 3 and parts[0] == BUNDLE_STORE and (bin_dir / link).exists():
        return parts[1]
    return None


def _prune(bin_dir: Path, store: Path, keep: set[str | None]) -> None:
    """Remove store folders that no plugin link of ``bin_dir`` uses, but for ``keep``."""
    for entry in os.scandir(bin_dir):
        if entry.is_symlink():
            keep.add(_store_entry(bin_dir, Path(entry.path)))
    now = time.time()
    for entry in os.scandir(store):
        if entry.name in keep:
            continue
        if entry.name.startswith(".tmp-") and now - entry.stat().st_mtime < _ABANDONED_AFTER_S:
            continue  # perhaps another installer's copy in progress
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.unlink(entry.path)


def _fsync_tree(root: Path) -> None:
    for directory, _subdirectories, files in os.walk(root):
        for file in files:
            path = os.path.join(directory, file)
            if not os.path.islink(path):
                descriptor = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(descriptor)
                finally:
                    os.close(descriptor)
        _fsync_directory(Path(directory))


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
