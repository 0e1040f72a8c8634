"""The node daemon's /metrics reflect what it did."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from pathlib import Path

from whereabouts_py.cni.install import install_cni
from whereabouts_py_dev.controlplane import ControlPlane, free_port
from whereabouts_py_dev.nodes import SimulatedNodes
from whereabouts_py_dev.runtime import invoke, pod_args


def sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.partition("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} {labels} in:\n{text[:3000]}")


def test_daemon_metrics_count_requests_allocations_and_writes(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    port = free_port()
    shim = install_cni(tmp_path / "bin")
    config = {
        "cniVersion": "1.0.0",
        "name": "metricsnet",
        "type": "macvlan",
        "ipam": {"type": "whereabouts", "range": "10.77.0.0/30"},
    }
    extra = ["--metrics-address", f"127.0.0.1:{port}"]
    with SimulatedNodes(control_plane, tmp_path, ["node-m"], namespace, extra_args=extra) as nodes:
        env = nodes["node-m"].environment()
        for pod in ("m-0", "m-1", "m-2"):  # a /30 holds two: the third is refused
            invoke(
                shim,
                "ADD",
                config,
                container_id=f"ctr-{pod}",
                ifname="net1",
                netns="/var/run/netns/x",
                args=pod_args("default", pod),
                env=env,
            )
        # A request naming no CNI verb, straight onto the socket: counted as "unknown".
        with socket.socket(socket.AF_UNIX) as raw:
            raw.connect(str(nodes["node-m"].socket))
            raw.sendall(b'{"command": "FROBNICATE"}\n')
            refused = json.loads(raw.makefile().readline())
        assert refused["error"]["code"] != 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    unknown = "whereabouts_request_duration_seconds_count"
    assert sample(text, unknown, verb="unknown") == 1
    assert "FROBNICATE" not in text
    # One histogram per verb and result: its _count is the request count.
    count = "whereabouts_request_duration_seconds_count"
    assert sample(text, count, verb="ADD", result="success") == 2
    assert sample(text, count, verb="ADD", result="pool_exhausted") == 1
    assert (
        sample(text, "whereabouts_allocations_total", network="metricsnet", result="allocated") == 2
    )
    assert (
        sample(text, "whereabouts_allocations_total", network="metricsnet", result="pool_exhausted")
        == 1
    )
    assert sample(text, "whereabouts_pool_write_batch_size_count", pool="10.77.0.0-30") >= 1
    assert "whereabouts_shim_requests_total" not in text
    assert "whereabouts_pool_writes_total" not in text
    # Every label value is snake_case.
    values = re.findall(r"^whereabouts_\w+\{([^}]*)\}", text, re.MULTILINE)
    for labels in values:
        for key, value in re.findall(r'(\w+)="([^"]*)"', labels):
            if key in ("verb", "result", "reason", "action"):
                assert re.fullmatch(r"[A-Za-z0-9_]*", value), (key, value)
