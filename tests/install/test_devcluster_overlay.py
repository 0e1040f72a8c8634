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


# --- the base on a real node -------------------------------------------------


def workload(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    obj = next(obj for obj in objects if obj["kind"] == kind)
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def test_every_host_path_exists_or_is_created_on_a_fresh_node(
    base: list[dict[str, Any]],
) -> None:
    volumes = workload(base, "DaemonSet")["volumes"]
    paths = {volume["hostPath"]["path"]: volume["hostPath"].get("type") for volume in volumes}
    assert paths == {
        "/opt/cni/bin": "DirectoryOrCreate",
        "/etc/cni/net.d": "DirectoryOrCreate",
        "/run/whereabouts-py": "DirectoryOrCreate",
        "/var/run/netns": "DirectoryOrCreate",
    }


def host_path(pod: dict[str, Any], container: dict[str, Any], inside: str) -> str:
    """Where a path seen inside ``container`` lies on the node, through its hostPath mounts."""
    volumes = {volume["name"]: volume["hostPath"]["path"] for volume in pod["volumes"]}
    for mount in container["volumeMounts"]:
        prefix = mount["mountPath"].rstrip("/")
        if inside == prefix or inside.startswith(prefix + "/"):
            return volumes[mount["name"]].rstrip("/") + inside[len(prefix) :]
    raise AssertionError(f"{container['name']}: {inside} is not on a host path")


def option(args: list[str], name: str) -> str | None:
    for index, arg in enumerate(args):
        if arg == name:
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def test_the_shim_finds_on_the_host_what_the_pod_wrote(base: list[dict[str, Any]]) -> None:
    """The plugin, the flat file and the daemon's socket land where the node's shim looks."""
    from whereabouts_py.cni.shim import FLAT_FILES

    pod = workload(base, "DaemonSet")
    (init,) = pod["initContainers"]
    (daemon,) = pod["containers"]
    assert host_path(pod, init, option(init["args"], "--bin-dir") or "") == "/opt/cni/bin"
    conf_dir = host_path(pod, init, option(init["args"], "--conf-dir") or "")
    assert f"{conf_dir}/whereabouts.conf" in FLAT_FILES
    # install-cni writes the node's view of the socket (its default unless given) into
    # whereabouts.conf; the daemon listens on it through the same host path.
    written = option(init["args"], "--socket") or "/run/whereabouts-py/daemon.sock"
    served = option(daemon["args"], "--socket") or ""
    assert host_path(pod, daemon, served) == written
    assert host_path(pod, daemon, option(daemon["args"], "--cni-conf-dir") or "") == conf_dir
    # Both write paths of the node's view into the files: the CLI's default unless given.
    default_host_conf_dir = "/etc/cni/net.d/whereabouts.d"
    for container in (init, daemon):
        assert (option(container["args"], "--host-conf-dir") or default_host_conf_dir) == conf_dir
    # The daemon looks into pods' network namespaces where the runtime makes them.
    assert host_path(pod, daemon, "/var/run/netns") == "/var/run/netns"
    assert pod["hostNetwork"] is True
