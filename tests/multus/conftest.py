"""The Multus lab: two simulated nodes, a router and pods on one segment, real Multus.

Each test gets a fresh lab (``whereabouts_py_dev.lab.Lab``) whose node
daemons keep their IPPools in the test's namespace, where the pods and the
example NetworkAttachmentDefinitions (``manifests/examples``) live too. At
teardown the lab must be gone completely: no netns of it, no Multus process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from whereabouts_py_dev.controlplane import ControlPlane
from whereabouts_py_dev.lab import Lab, examples_dir
from whereabouts_py_dev.multus import ensure_multus

from .helpers import netns_list

# The README's test command runs as root: a missing privilege is a broken
# set-up, reported as a failure, never a skip.
if os.geteuid() != 0:  # pragma: no cover - the suite runs as root in CI
    raise RuntimeError("tests/multus needs root: network namespaces are created for real")


@pytest.fixture(scope="session")
def multus_binary() -> Path:
    """The pinned Multus thin plugin, built once into the cache."""
    return ensure_multus()


@pytest.fixture
def lab(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, multus_binary: Path
) -> Iterator[Lab]:
    """A fresh lab; leaving it fails the test if a process still ran in one of its netns."""
    running = Lab(control_plane, tmp_path / "lab", pool_namespace=namespace)
    with running:
        yield running
    leftovers = [name for name in netns_list() if name.startswith(f"wbl-{running.tag}-")]
    assert leftovers == [], f"the lab left network namespaces behind: {leftovers}"


@pytest.fixture
def examples(control_plane: ControlPlane, namespace: str) -> dict[str, dict[str, Any]]:
    """Apply ``manifests/examples`` to the test's namespace; return each NAD's CNI config."""
    control_plane.kubectl("apply", "-n", namespace, "-k", str(examples_dir()))
    listed = json.loads(
        control_plane.kubectl(
            "get", "network-attachment-definitions", "-n", namespace, "-o", "json"
        ).stdout
    )
    return {
        item["metadata"]["name"]: json.loads(item["spec"]["config"]) for item in listed["items"]
    }
