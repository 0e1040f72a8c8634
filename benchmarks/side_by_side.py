"""whereabouts-py next to whereabouts (Go, v0.9) on one control plane, exec per call.

    .venv/bin/python benchmarks/side_by_side.py            # everything (about 10 minutes)
    .venv/bin/python benchmarks/side_by_side.py --quick    # small sizes, a minute or two
    .venv/bin/python benchmarks/side_by_side.py --scenarios shared24 --plugins ours

Both plugins run as a container runtime runs them: one process per CNI call
(``whereabouts_py_dev.runtime.invoke``), configuration on stdin, the pod in
CNI_ARGS, calls spread round-robin over 10 simulated nodes. Ours goes through
the installed shim to each node's own daemon (``SimulatedNodes``); the Go
plugin is the real one (``whereabouts_py_dev.goplugin``), reading its flat
file. Each plugin and scenario gets a namespace of its own.

Scenarios: ``shared24`` (250 ADDs into one /24 at concurrency 25),
``range20`` (1,000 ADDs into a /20 at concurrency 50), ``single`` (one ADD
at a time); each burst is followed by the DEL of every attachment, measured
the same way. For every burst it prints allocations/s, p50/p99, failures,
the API requests by resource and verb per call (the apiserver's own
``apiserver_request_total``, read before and after), the CPU per call of the
apiserver, etcd, our daemons (``/proc/<pid>/stat``) and of the exec'd
plugin processes (``RUSAGE_CHILDREN``), and the ratio to Go. It also
measures the apiserver's own limit in the same run (small custom-object
creates per second at concurrency 10) and a bare ``python3 -IS -c pass``
exec'd the same way as the shim. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ipam_bench import api_requests, cpu_seconds, percentile

from whereabouts_py.cni.install import install_cni
from whereabouts_py_dev.controlplane import ControlPlane, running
from whereabouts_py_dev.goplugin import (
    ensure_go_whereabouts,
    namespaced_kubeconfig,
    write_flat_file,
)
from whereabouts_py_dev.nodes import SimulatedNodes
from whereabouts_py_dev.runtime import Outcome, invoke, pod_args

INTERESTING = ("ippools", "overlappingrangeipreservations", "leases")
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")


@dataclass
class Burst:
    """The figures of one burst of calls."""

    label: str
    calls: int
    elapsed_s: float
    latencies_s: list[float]
    failures: list[str]
    requests: dict[tuple[str, str, str], int]
    cpu_s: dict[str, float]

    @property
    def rate(self) -> float:
        return (self.calls - len(self.failures)) / self.elapsed_s if self.elapsed_s else 0.0

    def per_call(self, value: float) -> float:
        return value / max(self.calls, 1)

    def count(self, resource_name: str | None = None, verbs: tuple[str, ...] = ()) -> int:
        return sum(
            n
            for (res, verb, _code), n in self.requests.items()
            if (resource_name is None or res == resource_name) and (not verbs or verb in verbs)
        )


@dataclass
class Plugin:
    """How to run one CNI call of one plugin on one node."""

    name: str
    call: Callable[[str, dict[str, Any], int, str], Outcome]
    daemon_pids: list[int] = field(default_factory=list)
    children_label: str = "plugin"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_now(plane: ControlPlane, plugin: Plugin) -> dict[str, float]:
    usage = {
        "apiserver": cpu_seconds(plane.pids["kube-apiserver"]),
        "etcd": cpu_seconds(plane.pids["etcd"]),
        plugin.children_label: children_cpu(),
        "benchmark": cpu_seconds(os.getpid()),
    }
    if plugin.daemon_pids:
        usage["daemons"] = sum(cpu_seconds(pid) for pid in plugin.daemon_pids)
    return usage


def network(cidr: str, flat_file: Path | None) -> dict[str, Any]:
    ipam: dict[str, Any] = {"type": "whereabouts", "range": cidr}
    if flat_file is not None:
        ipam["configuration_path"] = str(flat_file)
    return {"cniVersion": "0.4.0", "name": "sidebench", "type": "macvlan", "ipam": ipam}


def burst(  # noqa: PLR0917
    plane: ControlPlane,
    plugin: Plugin,
    label: str,
    command: str,
    net: dict[str, Any],
    pods: range,
    concurrency: int,
    nodes: list[str],
) -> Burst:
    failures: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> float:
        started = time.perf_counter()
        try:
            outcome = plugin.call(command, net, i, nodes[i % len(nodes)])
            ok = outcome.ok
            problem = (outcome.stdout or outcome.stderr).strip()[:300]
        except subprocess.TimeoutExpired:
            ok, problem = False, "timed out"
        took = time.perf_counter() - started
        if not ok:
            with lock:
                failures.append(problem)
        return took

    requests_before = api_requests(plane)
    cpu_before = cpu_now(plane, plugin)
    started = time.perf_counter()
    if concurrency <= 1:
        latencies = [one(i) for i in pods]
    else:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            latencies = list(pool.map(one, pods))
    elapsed = time.perf_counter() - started
    cpu_after = cpu_now(plane, plugin)
    requests_after = api_requests(plane)
    requests = {
        key: requests_after[key] - requests_before.get(key, 0)
        for key in requests_after
        if requests_after[key] - requests_before.get(key, 0)
    }
    cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_after}
    return Burst(label, len(pods), elapsed, latencies, failures, requests, cpu)


def report(result: Burst, go: Burst | None = None, limit: float | None = None) -> None:
    ms = [value * 1000 for value in result.latencies_s]
    print(
        f"  {result.label}: {result.calls} calls in {result.elapsed_s:.1f} s: "
        f"{result.rate:.1f}/s, p50 {percentile(ms, 0.5):.0f} ms, "
        f"p99 {percentile(ms, 0.99):.0f} ms, "
        f"failures {len(result.failures)}",
        flush=True,
    )
    for problem in sorted(set(result.failures))[:3]:
        print(f"      failure: {problem}")
    parts = []
    for (res, verb, code), count in sorted(result.requests.items()):
        if res in INTERESTING:
            parts.append(f"{res} {verb} {code}: {count} ({result.per_call(count):.2f})")
    print("    API requests (per call): " + "; ".join(parts))
    writes = result.count(verbs=WRITE_VERBS)
    print(
        f"    per call: API writes {result.per_call(writes):.2f} "
        f"(IPPool {result.per_call(result.count('ippools', WRITE_VERBS)):.2f}), "
        f"Lease requests {result.per_call(result.count('leases')):.2f}, "
        f"all API requests {result.per_call(result.count()):.2f}"
    )
    print(
        "    CPU ms per call: "
        + ", ".join(
            f"{name} {result.per_call(seconds) * 1000:.1f}"
            for name, seconds in result.cpu_s.items()
        )
    )
    if go is not None and go.rate:
        line = f"    ratio to Go: {result.rate / go.rate:.2f}x calls/s"
        if go.latencies_s and result.latencies_s:
            go_p99 = percentile(go.latencies_s, 0.99)
            line += f", p99 {percentile(result.latencies_s, 0.99) / go_p99:.2f} of Go's"
        print(line)
    if limit:
        print(f"    fraction of the apiserver's create limit: {result.rate / limit:.1%}")


def apiserver_limit(plane: ControlPlane, seconds: float, concurrency: int = 10) -> float:
    """Small custom-object creates per second the apiserver sustains at ``concurrency``."""
    namespace = f"limit-{uuid.uuid4().hex[:6]}"
    plane.kubectl("create", "namespace", namespace)
    url = urlsplit(plane.server)
    connections = urllib3.HTTPSConnectionPool(
        url.hostname or "",
        url.port,
        maxsize=concurrency,
        ca_certs=str(plane.ca_file),
        assert_hostname=False,
    )
    headers = {"Authorization": f"Bearer {plane.token()}", "Content-Type": "application/json"}
    path = (
        f"/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/{namespace}"
        "/overlappingrangeipreservations"
    )
    stop = time.monotonic() + seconds
    counts = [0] * concurrency
    refused: dict[int, int] = {}

    def creator(worker: int) -> None:
        i = 0
        while time.monotonic() < stop:
            body = {
                "apiVersion": "whereabouts.cni.cncf.io/v1alpha1",
                "kind": "OverlappingRangeIPReservation",
                "metadata": {"name": f"lim-{worker}-{i}"},
                "spec": {"containerid": f"c{worker}x{i}", "podref": f"{namespace}/p{i}"},
            }
            answer = connections.request(
                "POST", path, body=json.dumps(body).encode(), headers=headers, retries=False
            )
            if answer.status == 201:
                counts[worker] += 1
            else:
                refused[answer.status] = refused.get(answer.status, 0) + 1
            i += 1

    apiserver_before = cpu_seconds(plane.pids["kube-apiserver"])
    etcd_before = cpu_seconds(plane.pids["etcd"])
    started = time.perf_counter()
    threads = [threading.Thread(target=creator, args=(w,)) for w in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rate = sum(counts) / (time.perf_counter() - started)
    created = max(sum(counts), 1)
    apiserver_ms = (cpu_seconds(plane.pids["kube-apiserver"]) - apiserver_before) / created * 1000
    etcd_ms = (cpu_seconds(plane.pids["etcd"]) - etcd_before) / created * 1000
    print(
        f"  apiserver limit: {sum(counts)} creates; CPU per create: "
        f"apiserver {apiserver_ms:.1f} ms, "
        f"etcd {etcd_ms:.1f} ms (the floor of what one reservation create costs)"
    )
    if refused:
        print(f"  apiserver limit: refused creates by HTTP status: {refused}")
    plane.kubectl("delete", "namespace", namespace, "--wait=false")
    return rate


def bare_python_cpu(runs: int) -> tuple[float, float]:
    """CPU (ms) and wall p50 (ms) of ``python3 -IS -c pass``, exec'd as the shim is."""
    before = children_cpu()
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-IS", "-c", "pass"],
            input="",
            capture_output=True,
            text=True,
            check=False,
        )
        walls.append(time.perf_counter() - started)
    return (children_cpu() - before) / runs * 1000, percentile(walls, 0.5) * 1000


def ours_plugin(
    plane: ControlPlane, workdir: Path, shim: Path, nodes: SimulatedNodes, namespace: str
) -> Plugin:
    def call(command: str, net: dict[str, Any], i: int, node: str) -> Outcome:
        return invoke(
            shim,
            command,
            net,
            container_id=f"ctr-{i}",
            ifname="net1",
            netns=f"/var/run/netns/p{i}",
            args=pod_args(namespace, f"pod-{i}"),
            env=nodes[node].environment(),
            timeout_s=60.0,
        )

    pids = [daemon.process.pid for daemon in nodes.daemons.values()]
    return Plugin("whereabouts-py", call, pids, "shim")


def go_plugin(binary: Path, namespace: str) -> Plugin:
    def call(command: str, net: dict[str, Any], i: int, node: str) -> Outcome:
        return invoke(
            binary,
            command,
            net,
            container_id=f"ctr-{i}",
            ifname="net1",
            netns=f"/var/run/netns/p{i}",
            args=pod_args(namespace, f"pod-{i}"),
            timeout_s=120.0,
        )

    return Plugin("whereabouts (Go)", call, [], "Go plugin")


SCENARIOS = {
    # name: (cidr, pods option, concurrency option)
    "shared24": ("10.210.0.0/24", "pods24", "concurrency24"),
    "range20": ("10.212.0.0/20", "pods20", "concurrency20"),
    "single": ("10.214.0.0/20", "single", None),
}


def run_scenario(  # noqa: PLR0917
    plane: ControlPlane,
    workdir: Path,
    options: argparse.Namespace,
    scenario: str,
    plugin_name: str,
    shim: Path,
    go_binary: Path | None,
) -> tuple[Burst, Burst]:
    cidr, pods_option, concurrency_option = SCENARIOS[scenario]
    pods = range(getattr(options, pods_option))
    concurrency = getattr(options, concurrency_option) if concurrency_option else 1
    node_names = [f"node-{i}" for i in range(options.nodes if concurrency > 1 else 1)]
    namespace = f"sbs-{scenario}-{plugin_name}-{uuid.uuid4().hex[:4]}"
    plane.kubectl("create", "namespace", namespace)
    where = workdir / namespace
    if plugin_name == "go":
        assert go_binary is not None
        kubeconfig = namespaced_kubeconfig(plane.kubeconfig, namespace, where / "kubeconfig")
        flat = write_flat_file(where / "whereabouts.d", kubeconfig)
        plugin = go_plugin(go_binary, namespace)
        net = network(cidr, flat)
        add = burst(plane, plugin, "ADD", "ADD", net, pods, concurrency, node_names)
        delete = burst(plane, plugin, "DEL", "DEL", net, pods, concurrency, node_names)
        return add, delete
    with SimulatedNodes(plane, where, node_names, namespace) as nodes:
        plugin = ours_plugin(plane, workdir, shim, nodes, namespace)
        net = network(cidr, None)
        if concurrency <= 1:  # warm the daemon (first LIST, connections), as a node is
            plugin.call("ADD", net, 10**6, node_names[0])
        add = burst(plane, plugin, "ADD", "ADD", net, pods, concurrency, node_names)
        delete = burst(plane, plugin, "DEL", "DEL", net, pods, concurrency, node_names)
    return add, delete


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="single,shared24,range20")
    parser.add_argument("--plugins", default="go,ours", help="go, ours or both")
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--pods24", type=int, default=250)
    parser.add_argument("--concurrency24", type=int, default=25)
    parser.add_argument("--pods20", type=int, default=1000)
    parser.add_argument("--concurrency20", type=int, default=50)
    parser.add_argument("--single", type=int, default=50, help="sequential ADDs")
    parser.add_argument("--limit-seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="small sizes for a quick look")
    options = parser.parse_args()
    if options.quick:
        options.pods24, options.pods20, options.single = 60, 150, 10
        options.limit_seconds = 2.0
    plugins = [name.strip() for name in options.plugins.split(",") if name.strip()]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {os.getloadavg()}",
        flush=True,
    )
    go_binary = ensure_go_whereabouts() if "go" in plugins else None
    with tempfile.TemporaryDirectory(prefix="wb-sbs-") as scratch, running() as plane:
        workdir = Path(scratch)
        shim = install_cni(workdir / "bin")
        limit = apiserver_limit(plane, options.limit_seconds)
        print(f"apiserver limit: {limit:.0f} small custom-object creates/s at concurrency 10")
        bare_cpu, bare_wall = bare_python_cpu(20)
        print(
            f"bare python3 -IS -c pass, exec'd: CPU {bare_cpu:.1f} ms, wall p50 {bare_wall:.1f} ms"
        )
        for scenario in options.scenarios.split(","):
            results: dict[str, tuple[Burst, Burst]] = {}
            for plugin_name in plugins:
                print(f"{scenario}, {plugin_name}:", flush=True)
                results[plugin_name] = run_scenario(
                    plane, workdir, options, scenario, plugin_name, shim, go_binary
                )
                go = results.get("go") if plugin_name != "go" else None
                add, delete = results[plugin_name]
                report(add, go[0] if go else None, limit if plugin_name != "go" else None)
                report(delete, go[1] if go else None)
        print(f"load average at the end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
