"""The self-contained shim: built by build-shim, installed by install-cni, run with no Python.

The bundle is built once for this module with the pinned PyInstaller (several
seconds), installed into a temporary CNI bin dir outside the repository and the
virtualenv, and run the way a node runs it: ``env -i`` with only the CNI
variables (and the daemon's socket), PATH pointing nowhere, so no Python and
no virtualenv is reachable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PyInstaller.archive.readers import pkg_archive_contents

from whereabouts_py.cli import main as cli_main
from whereabouts_py.cni.bundle import EXECUTABLE, MANIFEST, build_shim
from whereabouts_py.cni.install import BUNDLE_STORE, IMAGE_BUNDLE, install_cni
from whereabouts_py_dev.controlplane import ControlPlane
from whereabouts_py_dev.nodes import SimulatedNodes
from whereabouts_py_dev.runtime import pod_args

ROOT = Path(__file__).resolve().parents[2]
OUR_MODULES = {"whereabouts_py", "whereabouts_py.errors", "whereabouts_py.cni"}
PYINSTALLER_OWN = {"pyimod01_archive", "pyimod02_importers", "pyimod03_ctypes"}
PYINSTALLER_OWN |= {"pyiboot01_bootstrap", "shim_entry", "PYZ.pyz"}
# What a glibc system has everywhere; the bundle brings its own libpython.
SYSTEM_LIBRARIES = ("libc.so", "libm.so", "libdl.so", "libpthread.so", "libz.so", "libutil.so")
SYSTEM_LIBRARIES += ("librt.so", "ld-linux", "linux-vdso.so")
NO_PYTHON = "/nonexistent"


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="wpy-shim-bundle-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def bundle(scratch: Path) -> Path:
    return build_shim(scratch / "bundle")


@pytest.fixture(scope="module")
def plugin(bundle: Path, scratch: Path) -> Path:
    """The plugin installed the way the DaemonSet's init container installs it."""
    bin_dir = scratch / "opt" / "cni" / "bin"
    assert cli_main(["install-cni", "--bin-dir", str(bin_dir), "--bundle", str(bundle)]) == 0
    return bin_dir / "whereabouts"


def run_bare(plugin: Path, stdin: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run ``plugin`` with nothing but ``variables`` in its environment and no Python on PATH."""
    assignments = [f"{name}={value}" for name, value in variables.items()]
    return subprocess.run(
        ["env", "-i", f"PATH={NO_PYTHON}", *assignments, str(plugin)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd="/",
        timeout=30,
        check=False,
    )


def bundled_modules(bundle: Path) -> set[str]:
    names = set(pkg_archive_contents(str(bundle / EXECUTABLE)))
    with zipfile.ZipFile(bundle / "_internal" / "base_library.zip") as base:
        for member in base.namelist():
            module = member.removesuffix(".pyc").removesuffix("/__init__").replace("/", ".")
            names.add(module)
    for extension in (bundle / "_internal").rglob("lib-dynload/*.so"):
        names.add(extension.name.partition(".")[0])
    return names - PYINSTALLER_OWN


def test_the_bundle_carries_only_the_shim_and_the_standard_library(bundle: Path) -> None:
    modules = bundled_modules(bundle)
    ours = {name for name in modules if name.startswith("whereabouts_py")}
    assert "whereabouts_py.cni.shim" in ours
    assert {name for name in ours if not name.startswith("whereabouts_py.cni.")} <= OUR_MODULES
    assert not {"whereabouts_py.cni.install", "whereabouts_py.cni.bundle"} & ours
    foreign = sorted(
        name for name in modules - ours if name.partition(".")[0] not in sys.stdlib_module_names
    )
    assert foreign == []
    assert not {"inspect", "argparse", "logging", "email", "subprocess", "asyncio"} & modules
    for path in (bundle / "_internal").rglob("*"):
        relative = path.relative_to(bundle / "_internal").as_posix()
        assert "site-packages" not in relative
        if path.is_file():
            assert relative == "base_library.zip" or re.fullmatch(
                r"lib[\w.+-]+\.so[.\d]*|python3\.\d+/lib-dynload/\w+\.cpython-[\w-]+\.so", relative
            ), relative
    manifest = json.loads((bundle / MANIFEST).read_text())
    assert manifest["builder"].startswith("PyInstaller 6.")
    assert manifest["executable"] == EXECUTABLE


def test_install_cni_links_the_plugin_to_a_complete_copy(bundle: Path, plugin: Path) -> None:
    bin_dir = plugin.parent
    link = os.readlink(plugin)
    assert link.startswith(f"{BUNDLE_STORE}/") and link.endswith(f"/{EXECUTABLE}"), link
    assert plugin.is_file() and os.access(plugin, os.X_OK)
    assert plugin.resolve().read_bytes()[:4] == b"\x7fELF", "a binary, not a #! script"
    assert set(os.listdir(bin_dir)) == {BUNDLE_STORE, "whereabouts"}


def test_reinstalling_switches_versions_by_rename_and_keeps_the_previous_one(
    bundle: Path, scratch: Path
) -> None:
    bin_dir = scratch / "versions" / "bin"
    store = bin_dir / BUNDLE_STORE
    first = install_cni(bin_dir, "whereabouts", bundle)
    first_version = os.readlink(first)
    first_inode = first.resolve().parent.stat().st_ino
    assert os.readlink(install_cni(bin_dir, "whereabouts", bundle)) == first_version
    assert first.resolve().parent.stat().st_ino == first_inode, "an unchanged bundle is not copied"

    versions = []
    for release in ("second", "third"):
        changed = scratch / release
        shutil.copytree(bundle, changed, symlinks=True)
        manifest = json.loads((changed / MANIFEST).read_text())
        (changed / MANIFEST).write_text(json.dumps(manifest | {"release": release}))
        versions.append(os.readlink(install_cni(bin_dir, "whereabouts", changed)))
        shutil.rmtree(changed)
    kept = {f"{BUNDLE_STORE}/{name}/{EXECUTABLE}" for name in os.listdir(store)}
    assert kept == set(versions), "the current and the previous version, the first is gone"
    assert not [name for name in os.listdir(bin_dir) if name.startswith(".")]

    # A damaged copy (here: a missing file) is replaced by a fresh one.
    current = (bin_dir / "whereabouts").resolve().parent
    (current / MANIFEST).unlink()
    restored = scratch / "third-again"
    shutil.copytree(bundle, restored, symlinks=True)
    manifest = json.loads((restored / MANIFEST).read_text())
    (restored / MANIFEST).write_text(json.dumps(manifest | {"release": "third"}))
    assert os.readlink(install_cni(bin_dir, "whereabouts", restored)) == versions[-1]
    assert (current / MANIFEST).is_file()
    shutil.rmtree(restored)


def test_install_cni_refuses_a_directory_that_is_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a shim bundle"):
        install_cni(tmp_path / "bin", "whereabouts", tmp_path)


def test_version_answers_with_no_python_reachable(plugin: Path) -> None:
    completed = run_bare(plugin, '{"cniVersion": "0.4.0"}', CNI_COMMAND="VERSION")
    assert completed.returncode == 0, completed
    assert json.loads(completed.stdout)["cniVersion"] == "0.4.0"
    assert completed.stderr == ""


def test_the_plugin_answers_to_its_file_name(bundle: Path, scratch: Path) -> None:
    renamed = install_cni(scratch / "renamed", "whereabouts-py", bundle)
    config = {"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "whereabouts"}}
    refused = run_bare(
        renamed,
        json.dumps(config),
        CNI_COMMAND="DEL",
        CNI_CONTAINERID="c1",
        CNI_IFNAME="net1",
        WHEREABOUTS_PY_SOCKET="/nonexistent.sock",
    )
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["code"] == 7
    assert "'whereabouts-py'" in refused.stdout


def test_add_and_del_against_a_real_daemon_with_no_python_reachable(
    plugin: Path, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    config = {
        "cniVersion": "1.0.0",
        "name": "bundled",
        "type": "macvlan",
        "ipam": {"type": "whereabouts", "range": "10.123.0.0/24", "gateway": "10.123.0.1"},
    }
    attachment = {
        "CNI_CONTAINERID": "ctr-bundled-0",
        "CNI_NETNS": "/var/run/netns/bundled-0",
        "CNI_IFNAME": "net1",
        "CNI_ARGS": pod_args("default", "bundled-0", uid="uid-bundled-0"),
        "CNI_PATH": str(plugin.parent),
    }
    with SimulatedNodes(control_plane, tmp_path / "nodes", ["node-a"], namespace) as nodes:
        socket_env = nodes["node-a"].environment()
        added = run_bare(plugin, json.dumps(config), CNI_COMMAND="ADD", **attachment, **socket_env)
        assert added.returncode == 0, added
        assert json.loads(added.stdout) == {
            "cniVersion": "1.0.0",
            "ips": [{"address": "10.123.0.2/24", "gateway": "10.123.0.1"}],
        }
        allocations = pool(control_plane, namespace)["allocations"]
        assert allocations["2"]["id"] == "ctr-bundled-0"
        assert allocations["2"]["podref"] == "default/bundled-0"

        deleted = run_bare(
            plugin, json.dumps(config), CNI_COMMAND="DEL", **attachment, **socket_env
        )
        assert (deleted.returncode, deleted.stdout) == (0, ""), deleted
        assert pool(control_plane, namespace)["allocations"] == {}


def pool(plane: ControlPlane, namespace: str) -> dict[str, Any]:
    found = plane.kubectl("get", "ippool", "10.123.0.0-24", "-n", namespace, "-o", "json")
    spec: dict[str, Any] = json.loads(found.stdout)["spec"]
    return spec


def test_links_only_against_libraries_every_glibc_system_has(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    internal = bundle / "_internal"
    binaries = [bundle / EXECUTABLE, *internal.glob("libpython*"), *internal.rglob("*.so")]
    report = []
    for binary in binaries:
        listing = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True)
        report.append(f"ldd {binary.relative_to(bundle)}:\n{listing.stdout.rstrip()}")
        assert "not found" not in listing.stdout, listing.stdout
        for line in listing.stdout.strip().splitlines():
            if line.strip() == "statically linked":  # an extension module needing nothing
                continue
            library = Path(line.split()[0]).name
            if library.startswith("libpython"):
                resolved = line.partition("=> ")[2].split(" (")[0]
                assert Path(resolved).is_relative_to(bundle), line
            else:
                assert library.startswith(SYSTEM_LIBRARIES), line
    with capsys.disabled():
        shown = [entry for entry in report if "lib-dynload" not in entry]
        print("\n" + "\n".join(shown))
        print(f"(and {len(report) - len(shown)} extension modules, all with the libraries above)")


def test_start_up_time(plugin: Path, scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = install_cni(scratch / "script-bin", "whereabouts")
    bundled_ms = _p50_ms(plugin)
    script_ms = _p50_ms(script)
    size = sum(path.stat().st_size for path in plugin.resolve().parent.rglob("*") if path.is_file())
    with capsys.disabled():
        print(
            f"\nbundled shim VERSION start-up over 20 runs: p50 {bundled_ms:.1f} ms"
            f" (script shim with this Python: p50 {script_ms:.1f} ms);"
            f" bundle {size / 2**20:.1f} MiB"
        )
    assert bundled_ms < 300


def _p50_ms(plugin: Path) -> float:
    times = []
    for _ in range(20):
        started = time.perf_counter()
        completed = run_bare(plugin, '{"cniVersion": "1.0.0"}', CNI_COMMAND="VERSION")
        times.append(time.perf_counter() - started)
        assert completed.returncode == 0, completed
    return statistics.median(times) * 1000


def test_the_image_builds_the_bundle_and_the_daemonset_installs_it() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "whereabouts-py build-shim --out /opt/whereabouts-py-shim" in dockerfile
    assert f"COPY --from=build /opt/whereabouts-py-shim {IMAGE_BUNDLE}" in dockerfile
    import yaml  # type: ignore[import-untyped]

    daemonset = yaml.safe_load((ROOT / "manifests" / "base" / "daemonset.yaml").read_text())
    args = daemonset["spec"]["template"]["spec"]["initContainers"][0]["args"]
    assert args[0] == "install-cni"
    assert args[args.index("--bundle") + 1] == str(IMAGE_BUNDLE)
