"""The Dockerfile passes hadolint, and every entry point it calls starts.

No Docker engine runs here and no registry is reachable, so these tests run
the entry points from the same package the image installs; the image itself
is built with buildah on a base made from Debian packages and run with podman
in test_product_image.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_pinned_and_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = text.splitlines()
    # Both stages build on BASE_IMAGE, whose default is the official slim image users
    # build with; `make image` points it at a base made from Debian packages.
    default_base = "ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim-bookworm"
    assert "ARG PYTHON_VERSION=3.12.8" in lines
    assert default_base in lines
    froms = [line for line in lines if line.startswith("FROM ")]
    assert froms == ["FROM ${BASE_IMAGE} AS build", "FROM ${BASE_IMAGE}"]
    # Global ARGs (before the first FROM) are the only ones a FROM line can use.
    first_from = lines.index(froms[0])
    assert lines.index("ARG PYTHON_VERSION=3.12.8") < lines.index(default_base) < first_from
    assert "USER 10001" in text
    assert 'ENTRYPOINT ["whereabouts-py"]' in text
    assert "org.opencontainers.image.source" in text


@pytest.mark.parametrize("subcommand", ["daemon", "install-cni", "build-shim", "reconciler"])
def test_entry_point_starts(subcommand: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "whereabouts_py", subcommand, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: whereabouts-py {subcommand}")


def test_product_command_offers_only_product_subcommands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "whereabouts_py", "devcluster"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert (
        "invalid choice: 'devcluster' (choose from 'daemon', 'reconciler', 'install-cni', "
        "'build-shim')" in result.stderr
    )


@pytest.mark.parametrize("subcommand", ["devcluster", "demo"])
def test_dev_tooling_command_starts(subcommand: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "whereabouts_py_dev", subcommand, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: whereabouts-py-dev {subcommand}")


def test_wheel_leaves_the_dev_tooling_out(tmp_path: Path) -> None:
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr
    import zipfile

    (wheel,) = tmp_path.glob("whereabouts_py-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(name.startswith("whereabouts_py/daemon/") for name in names)
    assert not [name for name in names if "devcluster" in name or "_dev" in name.split("/")[0]]
