"""The product image, built from the Dockerfile with buildah and run with podman.

``ensure_product_image`` builds ``localhost/whereabouts-py:dev`` on a base made
here from Debian packages (no registry is reachable) and exports the OCI archive
that the cluster's nodes import; the first build takes minutes, later runs reuse
it until the Dockerfile, pyproject.toml, README.md or the sources change. The
archive's image is loaded into the tooling's own containers storage and run with
real container tooling (podman, runc) the way the base manifests run it: the
containers' args, user, capabilities, read-only root and host-path mounts are
read from manifests/base/daemonset.yaml and reconciler.yaml, the host paths
rooted in a temporary directory that stands for the node, and the in-cluster
credentials (token, CA, KUBERNETES_SERVICE_*) pointing at the local control plane.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from whereabouts_py_dev.controlplane import ControlPlane, free_port
from whereabouts_py_dev.image import (
    CONTAINERD_NAME_ANNOTATION,
    PRODUCT_IMAGE,
    archive_image_id,
    ensure_product_image,
    load_product_image,
    podman_command,
    product_digest,
    run_limits,
)
from whereabouts_py_dev.runtime import pod_args

pytestmark = [pytest.mark.image, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
NO_PYTHON = "/nonexistent"


@pytest.fixture(scope="module")
def archive() -> Path:
    return ensure_product_image()


@pytest.fixture(scope="module")
def image(archive: Path) -> str:
    load_product_image(archive)
    return PRODUCT_IMAGE


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*podman_command(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def run(image: str, *args: str, options: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    return podman("run", "--rm", *run_limits(), *options, image, *args)


def manifest_pod(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((ROOT / "manifests" / "base" / name).read_text())["spec"]
    pod: dict[str, Any] = spec["template"]["spec"]
    return pod


def read_blob(archive: Path, digest: str) -> dict[str, Any]:
    with tarfile.open(archive) as tar:
        member = tar.extractfile("blobs/" + digest.replace(":", "/"))
        assert member is not None, digest
        blob: dict[str, Any] = json.loads(member.read())
        return blob


def test_archive_names_the_image_for_containerd(archive: Path) -> None:
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        index_file = tar.extractfile("index.json")
        assert index_file is not None
        index = json.loads(index_file.read())
    assert {"oci-layout", "index.json"} <= names
    (entry,) = index["manifests"]
    assert entry["annotations"][CONTAINERD_NAME_ANNOTATION] == "localhost/whereabouts-py:dev"
    manifest = read_blob(archive, entry["digest"])
    for layer in manifest["layers"]:
        assert "blobs/" + layer["digest"].replace(":", "/") in names
    config = read_blob(archive, manifest["config"]["digest"])
    assert config["config"]["User"] == "10001"
    assert config["config"]["Entrypoint"] == ["whereabouts-py"]
    assert config["config"]["Cmd"] == ["--help"]
    assert config["config"]["Labels"]["org.opencontainers.image.version"] == "0.1.0"
    assert archive_image_id(archive) == manifest["config"]["digest"].removeprefix("sha256:")


def test_archive_name_follows_exactly_its_inputs(archive: Path, tmp_path: Path) -> None:
    assert re.fullmatch(r"whereabouts-py-[0-9a-f]{12}\.tar", archive.name)
    copy = tmp_path / "tree"
    for name in ("Dockerfile", "pyproject.toml", "README.md"):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes((ROOT / name).read_bytes())
    for source in (ROOT / "whereabouts_py").rglob("*.py"):
        target = copy / source.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    first = product_digest(copy)
    assert product_digest(copy) == first
    # Files the Dockerfile does not copy change nothing.
    (copy / "tests").mkdir()
    (copy / "tests" / "test_x.py").write_text("x = 1\n")
    (copy / "whereabouts_py" / "__pycache__").mkdir(exist_ok=True)
    (copy / "whereabouts_py" / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"\0")
    assert product_digest(copy) == first
    # Any input does.
    seen = {first}
    for relative in ("Dockerfile", "README.md", "whereabouts_py/cli.py"):
        with (copy / relative).open("a") as file:
            file.write("\n# changed\n")
        seen.add(product_digest(copy))
    assert len(seen) == 4


def test_help_runs_with_no_network_and_offers_only_the_product(image: str) -> None:
    started = time.monotonic()
    result = run(image, options=["--network", "none"])
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: whereabouts-py")
    for subcommand in ("daemon", "reconciler", "install-cni", "build-shim"):
        assert subcommand in result.stdout
    assert "devcluster" not in result.stdout
    print(f"podman run --help: {elapsed:.2f}s")


def test_runs_as_uid_10001_by_default_on_debian_python(image: str) -> None:
    who = run(image, "-c", "import os; print(os.getuid(), os.getgid())", options=python())
    assert who.returncode == 0, who.stderr
    assert who.stdout.split()[0] == "10001"
    version = run(image, "-c", "import sys; print(sys.version_info[:2])", options=python())
    assert version.stdout.strip() == "(3, 11)", version


def python() -> list[str]:
    return ["--network", "none", "--entrypoint", "python"]


def test_the_image_carries_no_trace_of_the_build_host(image: str) -> None:
    """The host's CA bundle and pip settings serve the build's RUN steps only."""
    host_bundle = Path("/etc/ssl/certs/ca-certificates.crt").read_bytes()
    found = run(
        image,
        "-c",
        "import hashlib, os; p = '/etc/ssl/certs/ca-certificates.crt';"
        " print(hashlib.sha256(open(p, 'rb').read()).hexdigest() if os.path.exists(p) else '-',"
        " os.path.exists('/etc/pip.conf'), os.path.exists('/opt/shim-build'))",
        options=python(),
    )
    assert found.returncode == 0, found.stderr
    import hashlib

    digest, pip_conf, shim_build = found.stdout.split()
    assert digest != hashlib.sha256(host_bundle).hexdigest()
    assert (pip_conf, shim_build) == ("False", "False")


class Node:
    """A temporary directory standing for a node's root: hostPath volumes land under it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, host_path: str) -> Path:
        return self.root / host_path.lstrip("/")

    def volume_options(self, pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
        volumes = {volume["name"]: volume["hostPath"] for volume in pod["volumes"]}
        options: list[str] = []
        for mount in container.get("volumeMounts", []):
            host_path = volumes[mount["name"]]
            source = self.path(host_path["path"])
            source.mkdir(parents=True, exist_ok=True)
            options += ["--volume", f"{source}:{mount['mountPath']}"]
        return options


def credentials(plane: ControlPlane, directory: Path, namespace: str) -> list[str]:
    """In-cluster credentials as the kubelet projects them, for the admin identity."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "token").write_text(plane.token("admin"))
    (directory / "ca.crt").write_text(plane.ca_file.read_text())
    (directory / "namespace").write_text(namespace)
    for path in [directory, *directory.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return [
        "--volume",
        f"{directory}:{SERVICE_ACCOUNT_DIR}:ro",
        "--env",
        "KUBERNETES_SERVICE_HOST=127.0.0.1",
        "--env",
        f"KUBERNETES_SERVICE_PORT={plane.apiserver_port}",
    ]


def security_options(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """The pod's and the container's securityContext as podman options."""
    context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    options: list[str] = []
    if "runAsUser" in context:
        options += ["--user", str(context["runAsUser"])]
    capabilities = context.get("capabilities", {})
    options += [f"--cap-drop={name}" for name in capabilities.get("drop", [])]
    options += [f"--cap-add={name}" for name in capabilities.get("add", [])]
    if context.get("readOnlyRootFilesystem"):
        # The kubelet mounts no tmpfs on /tmp: neither does this.
        options += ["--read-only", "--read-only-tmpfs=false"]
    if context.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    return options


def expand(args: Sequence[str], values: dict[str, str]) -> list[str]:
    """Replace ``$(VAR)`` as the kubelet does from the container's env."""
    return [re.sub(r"\$\((\w+)\)", lambda match: values[match.group(1)], arg) for arg in args]


def test_install_cni_as_the_daemonset_runs_it_gives_a_shim_that_needs_no_python(
    image: str, tmp_path: Path
) -> None:
    pod = manifest_pod("daemonset.yaml")
    (init,) = pod["initContainers"]
    node = Node(tmp_path / "node")
    result = run(
        image,
        *init["args"],
        options=[
            "--network",
            "none",
            *security_options(pod, init),
            *node.volume_options(pod, init),
        ],
    )
    assert result.returncode == 0, result.stderr
    plugin = node.path("/opt/cni/bin/whereabouts")
    target = os.readlink(plugin)
    assert re.fullmatch(r"whereabouts-py\.d/[0-9a-f]{16}/whereabouts", target), target
    assert plugin.resolve().is_file()
    # The flat file names the socket the daemon serves, as the node sees it.
    flat_file = node.path("/etc/cni/net.d/whereabouts.d/whereabouts.conf")
    assert stat.S_IMODE(flat_file.stat().st_mode) == 0o600
    daemon_socket = json.loads(flat_file.read_text())["daemon_socket"]
    (daemon,) = pod["containers"]
    assert f"--socket={daemon_socket}" in daemon["args"]
    run_volume = next(v for v in pod["volumes"] if v["name"] == "run")
    assert Path(daemon_socket).parent == Path(run_volume["hostPath"]["path"])

    # On the host, outside any container, with no Python reachable.
    answer = subprocess.run(
        ["env", "-i", f"PATH={NO_PYTHON}", "CNI_COMMAND=VERSION", str(plugin)],
        input='{"cniVersion": "1.0.0"}',
        capture_output=True,
        text=True,
        cwd="/",
        timeout=30,
        check=False,
    )
    assert answer.returncode == 0, answer.stderr
    version = json.loads(answer.stdout)
    assert version["cniVersion"] == "1.0.0"
    assert "0.4.0" in version["supportedVersions"]


def local(args: Sequence[str], namespace: str, port: int) -> list[str]:
    """The manifest's args, but metrics on a free loopback port and Leases in the test's
    namespace: other tests share this host's network and the control plane."""
    kept = [a for a in args if not a.startswith(("--metrics-address=", "--lease-namespace="))]
    assert len(args) - len(kept) == 2, args
    return [*kept, f"--metrics-address=127.0.0.1:{port}", f"--lease-namespace={namespace}"]


@pytest.fixture
def containers() -> Iterator[list[str]]:
    """Names of containers a test started in the background; removed at the end."""
    names: list[str] = []
    yield names
    for name in names:
        podman("rm", "--force", "--time", "2", name)


def start(image: str, containers: list[str], args: Sequence[str], options: Sequence[str]) -> str:
    name = f"wpy-test-{uuid.uuid4().hex[:10]}"
    containers.append(name)
    started = podman(
        "run", "--detach", "--rm", "--name", name, *run_limits(), *options, image, *args
    )
    assert started.returncode == 0, started.stderr
    return name


def wait_for_metric(port: int, name: str, container: str, timeout: float = 90) -> dict[str, float]:
    """Poll /metrics until ``name`` appears; fail with the container's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
                text = reply.read().decode()
        except OSError:
            text = ""
        values = {
            line.split()[0]: float(line.split()[1])
            for line in text.splitlines()
            if line.startswith(name)
        }
        if values:
            return values
        time.sleep(0.5)
    logs = podman("logs", container)
    raise AssertionError(f"no {name} on :{port} after {timeout}s:\n{logs.stdout}{logs.stderr}")


def wait_for_probe(port: int, path: str, container: str, timeout: float = 90) -> None:
    """Poll an HTTP probe's path until it answers 200; fail with the container's log."""
    deadline = time.monotonic() + timeout
    status = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
                if reply.status == 200:
                    return
                status = str(reply.status)
        except OSError as error:
            status = str(error)
        time.sleep(0.5)
    logs = podman("logs", container)
    output = logs.stdout + logs.stderr
    raise AssertionError(f"{path} on :{port}: {status} after {timeout}s:\n{output}")


@pytest.mark.kube
def test_reconciler_as_the_deployment_runs_it_leads(
    image: str,
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
    containers: list[str],
) -> None:
    pod = manifest_pod("reconciler.yaml")
    (reconciler,) = pod["containers"]
    port = free_port()
    args = expand(reconciler["args"], {"POD_NAMESPACE": namespace, "POD_NAME": "reconciler-0"})
    args = local(args, namespace, port)
    assert "--user" not in security_options({}, reconciler)  # the image's own user
    name = start(
        image,
        containers,
        args,
        [
            "--network",
            "host",
            *security_options(pod, reconciler),
            *credentials(control_plane, tmp_path / "sa", namespace),
        ],
    )
    for probe in ("livenessProbe", "readinessProbe"):  # as the kubelet probes it
        wait_for_probe(port, reconciler[probe]["httpGet"]["path"], name)
    leader = wait_for_metric(port, "whereabouts_reconciler_leader", name)
    deadline = time.monotonic() + 60
    while leader["whereabouts_reconciler_leader"] != 1.0 and time.monotonic() < deadline:
        time.sleep(1)
        leader = wait_for_metric(port, "whereabouts_reconciler_leader", name)
    assert leader["whereabouts_reconciler_leader"] == 1.0
    lease = control_plane.kubectl(
        "get", "lease", "whereabouts-py-reconciler", "-n", namespace, "-o", "json"
    )
    assert json.loads(lease.stdout)["spec"]["holderIdentity"] == "reconciler-0"
    top = podman("top", name, "huser")  # the uid as the host sees it
    assert top.returncode == 0, top.stderr
    assert top.stdout.split()[1:] == ["10001"], top.stdout


@pytest.mark.kube
def test_daemon_as_the_daemonset_runs_it_serves_the_host_shim(
    image: str,
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
    containers: list[str],
) -> None:
    """install-cni, then the daemon; the host's shim allocates through its socket."""
    pod = manifest_pod("daemonset.yaml")
    (init,) = pod["initContainers"]
    (daemon,) = pod["containers"]
    node = Node(tmp_path / "node")
    sa = credentials(control_plane, tmp_path / "sa", namespace)
    installed = run(
        image,
        *init["args"],
        options=["--network", "host", *security_options(pod, init), *sa,
                 *node.volume_options(pod, init)],
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    # In a pod, install-cni also writes the node's kubeconfig for tools on the host.
    conf_dir = node.path("/etc/cni/net.d/whereabouts.d")
    kubeconfig = json.loads((conf_dir / "whereabouts.kubeconfig").read_text())
    assert kubeconfig["clusters"][0]["cluster"]["server"] == control_plane.server
    assert kubeconfig["contexts"][0]["context"]["namespace"] == namespace
    assert json.loads((conf_dir / "whereabouts.conf").read_text())["kubernetes"] == {
        "kubeconfig": "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig"
    }

    port = free_port()
    args = expand(daemon["args"], {"NODE_NAME": "node-a", "POD_NAMESPACE": namespace})
    args = local(args, namespace, port)
    name = start(
        image,
        containers,
        args,
        ["--network", "host", *security_options(pod, daemon), *sa,
         *node.volume_options(pod, daemon)],
    )  # fmt: skip
    for probe in ("livenessProbe", "readinessProbe"):  # as the kubelet probes it
        wait_for_probe(port, daemon[probe]["httpGet"]["path"], name)
    socket_path = node.path("/run/whereabouts-py/daemon.sock")
    deadline = time.monotonic() + 30
    while not socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stat.S_ISSOCK(socket_path.stat().st_mode)

    plugin = node.path("/opt/cni/bin/whereabouts")
    config = {
        "cniVersion": "1.0.0",
        "name": "in-image",
        "type": "macvlan",
        "ipam": {"type": "whereabouts", "range": "10.124.0.0/24", "gateway": "10.124.0.1"},
    }
    attachment = {
        "CNI_CONTAINERID": "ctr-image-0",
        "CNI_NETNS": "/var/run/netns/image-0",
        "CNI_IFNAME": "net1",
        "CNI_ARGS": pod_args("default", "image-0", uid="uid-image-0"),
        "CNI_PATH": str(plugin.parent),
        # The node's /run/whereabouts-py is under the temporary node root here.
        "WHEREABOUTS_PY_SOCKET": str(socket_path),
    }
    added = shim(plugin, "ADD", config, attachment)
    assert added.returncode == 0, added
    assert json.loads(added.stdout) == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.124.0.2/24", "gateway": "10.124.0.1"}],
    }
    found = control_plane.kubectl("get", "ippool", "10.124.0.0-24", "-n", namespace, "-o", "json")
    allocation = json.loads(found.stdout)["spec"]["allocations"]["2"]
    assert (allocation["id"], allocation["podref"]) == ("ctr-image-0", "default/image-0")
    deleted = shim(plugin, "DEL", config, attachment)
    assert (deleted.returncode, deleted.stdout) == (0, ""), deleted
    found = control_plane.kubectl("get", "ippool", "10.124.0.0-24", "-n", namespace, "-o", "json")
    assert json.loads(found.stdout)["spec"]["allocations"] == {}


def shim(
    plugin: Path, command: str, config: dict[str, Any], attachment: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    assignments = [f"{key}={value}" for key, value in attachment.items()]
    return subprocess.run(
        ["env", "-i", f"PATH={NO_PYTHON}", f"CNI_COMMAND={command}", *assignments, str(plugin)],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        cwd="/",
        timeout=60,
        check=False,
    )
