"""manifests/overlays/devcluster: the base with the image built here, and nothing else.

Rendered with the pinned kubectl's kustomize (no API server needed), compared
object by object with the base as ``kubectl apply -k manifests/`` renders it.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from whereabouts_py_dev.binaries import ensure_binaries
from whereabouts_py_dev.image import PRODUCT_IMAGE

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "ghcr.io/whereabouts-py/whereabouts-py:0.1.0"


def render(directory: Path) -> list[dict[str, Any]]:
    kubectl = ensure_binaries().kubectl
    result = subprocess.run(
        [str(kubectl), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(ROOT / "manifests")


@pytest.fixture(scope="module")
def overlay() -> list[dict[str, Any]]:
    return render(ROOT / "manifests" / "overlays" / "devcluster")


def pod_containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    template = obj.get("spec", {}).get("template", {}).get("spec", {})
    containers: list[dict[str, Any]] = template.get("initContainers", [])
    return containers + template.get("containers", [])


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    metadata = obj["metadata"]
    return obj["kind"], metadata.get("namespace", ""), metadata["name"]


def test_every_container_runs_the_local_image_never_pulled(
    overlay: list[dict[str, Any]],
) -> None:
    containers = {
        (obj["kind"], container["name"]): container
        for obj in overlay
        for container in pod_containers(obj)
    }
    assert sorted(containers) == [
        ("DaemonSet", "daemon"),
        ("DaemonSet", "install-cni"),
        ("Deployment", "reconciler"),
    ]
    for container in containers.values():
        assert container["image"] == PRODUCT_IMAGE == "localhost/whereabouts-py:dev"
        assert container["imagePullPolicy"] == "Never"


def test_nothing_else_differs_from_the_base(
    base: list[dict[str, Any]], overlay: list[dict[str, Any]]
) -> None:
    assert [key(obj) for obj in overlay] == [key(obj) for obj in base]
    for in_base, in_overlay in zip(base, overlay, strict=True):
        undone = copy.deepcopy(in_overlay)
        for container in pod_containers(undone):
            container["image"] = BASE_IMAGE
            del container["imagePullPolicy"]
        assert undone == in_base, key(in_base)


def test_the_base_names_the_published_image_and_lets_the_kubelet_pull_it(
    base: list[dict[str, Any]],
) -> None:
    containers = [container for obj in base for container in pod_containers(obj)]
    assert len(containers) == 3
    for container in containers:
        assert container["image"] == BASE_IMAGE
        assert "imagePullPolicy" not in container
