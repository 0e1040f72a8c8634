"""Benchmarks of the IPAM path; prints numbers, asserts nothing.

    .venv/bin/python benchmarks/ipam_bench.py [--pods 1000] [--nodes 10] [--concurrency 100]

1. Shim start-up: exec of the installed shim to its answer (VERSION, answered
   by the shim itself; and an idempotent ADD, which the warm daemon answers
   without any API write).
2. A single ADD end to end through the shim, one at a time.
3. Many ADDs from many daemons at once, sent straight to the daemons' sockets,
   for each pool-coordination mode: allocations/s, latency p50/p99 and the
   API writes per allocation, counted by the apiserver itself
   (apiserver_request_total).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import ssl
import statistics
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from whereabouts_py.cni import wire
from whereabouts_py.cni.install import install_cni
from whereabouts_py_dev.controlplane import ControlPlane, running
from whereabouts_py_dev.nodes import SimulatedNodes
from whereabouts_py_dev.runtime import invoke, pod_args


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(values_s: list[float]) -> str:
    ms = [v * 1000 for v in values_s]
    return (
        f"p50 {percentile(ms, 0.5):7.1f} ms   p99 {percentile(ms, 0.99):7.1f} ms   "
        f"mean {statistics.fmean(ms):7.1f} ms   n={len(ms)}"
    )


def api_requests(plane: ControlPlane) -> dict[tuple[str, str, str], int]:
    """Requests the apiserver served, by (resource, verb, HTTP code)."""
    context = ssl.create_default_context(cafile=str(plane.ca_file))
    context.check_hostname = False
    request = urllib.request.Request(f"{plane.server}/metrics")
    request.add_header("Authorization", f"Bearer {plane.token()}")
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:
        text = answer.read().decode()
    counts: dict[tuple[str, str, str], int] = {}
    pattern = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
    for line in text.splitlines():
        match = pattern.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        key = (labels.get("resource", ""), labels.get("verb", ""), labels.get("code", ""))
        counts[key] = counts.get(key, 0) + int(float(match["value"]))
    return counts


def api_writes(plane: ControlPlane) -> dict[str, int]:
    """Write requests the apiserver served, by resource (POST/PUT/PATCH/DELETE)."""
    writes: dict[str, int] = {}
    for (resource, verb, _code), count in api_requests(plane).items():
        if verb in {"POST", "PUT", "PATCH", "DELETE"}:
            writes[resource] = writes.get(resource, 0) + count
    return writes


def request_breakdown(
    before: dict[tuple[str, str, str], int], after: dict[tuple[str, str, str], int]
) -> str:
    interesting = {"ippools", "overlappingrangeipreservations", "leases"}
    parts = []
    for key in sorted(after):
        delta = after[key] - before.get(key, 0)
        if key[0] in interesting and delta:
            parts.append(f"{key[0]} {key[1]} {key[2]}: {delta}")
    return "; ".join(parts)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_component(plane: ControlPlane, nodes: SimulatedNodes) -> dict[str, float]:
    usage = {
        "kube-apiserver": cpu_seconds(plane.pids["kube-apiserver"]),
        "etcd": cpu_seconds(plane.pids["etcd"]),
        "daemons": sum(cpu_seconds(d.process.pid) for d in nodes.daemons.values()),
        "benchmark client": cpu_seconds(os.getpid()),
    }
    return usage


def timed_add(socket: Path, net: dict[str, Any], i: int, *, timeout_s: float) -> float:
    """One ADD for pod-<i> sent straight to a daemon's socket; its latency in seconds."""
    request = {
        "command": "ADD",
        "containerID": f"ctr-{i}",
        "netns": "/var/run/netns/x",
        "ifname": "net1",
        "args": pod_args("default", f"pod-{i}"),
        "path": "/usr/lib/cni",
        "config": net,
    }
    started = time.perf_counter()
    wire.call(str(socket), request, timeout_s=timeout_s)
    return time.perf_counter() - started


def config(ipam: dict[str, Any]) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "bench", "type": "macvlan", "ipam": ipam}


def bench_shim(plane: ControlPlane, workdir: Path, runs: int) -> None:
    shim = install_cni(workdir / "bin")
    namespace = "bench-shim"
    plane.kubectl("create", "namespace", namespace)
    net = config({"type": "whereabouts", "range": "10.200.0.0/16"})
    with SimulatedNodes(plane, workdir / "shim-nodes", ["node-0"], namespace) as nodes:
        env = nodes["node-0"].environment()
        version = []
        for _ in range(runs):
            started = time.perf_counter()
            outcome = invoke(shim, "VERSION", net, env=env)
            version.append(time.perf_counter() - started)
            assert outcome.ok, outcome.stdout
        print(f"shim start-up, VERSION (no daemon call)     {summary(version)}")

        common = {"container_id": "ctr-held", "ifname": "net1", "netns": "/var/run/netns/x"}
        args = pod_args("default", "held")
        assert invoke(shim, "ADD", net, args=args, env=env, **common).ok
        repeat = []
        for _ in range(runs):
            started = time.perf_counter()
            outcome = invoke(shim, "ADD", net, args=args, env=env, **common)
            repeat.append(time.perf_counter() - started)
            assert outcome.ok, outcome.stdout
        print(f"shim exec to answer, idempotent ADD (no write) {summary(repeat)}")

        single = []
        for i in range(runs):
            started = time.perf_counter()
            outcome = invoke(
                shim,
                "ADD",
                net,
                args=pod_args("default", f"single-{i}"),
                env=env,
                container_id=f"ctr-single-{i}",
                ifname="net1",
                netns="/var/run/netns/x",
            )
            single.append(time.perf_counter() - started)
            assert outcome.ok, outcome.stdout
        print(f"single ADD end to end through the shim     {summary(single)}")


def bench_load(
    plane: ControlPlane,
    workdir: Path,
    *,
    pods: int,
    node_count: int,
    concurrency: int,
    mode: str,
    cidr: str = "10.201.0.0/20",
) -> None:
    namespace = f"bench-{mode}-{cidr.replace('/', '-').replace('.', '-')}"
    plane.kubectl("create", "namespace", namespace)
    names = [f"node-{i}" for i in range(node_count)]
    net = config({"type": "whereabouts", "range": cidr})
    with SimulatedNodes(
        plane, workdir / f"nodes-{mode}", names, namespace, extra_args=["--pool-leases", mode]
    ) as nodes:

        def attach(i: int) -> float:
            return timed_add(nodes[names[i % node_count]].socket, net, i, timeout_s=60)

        before = api_writes(plane)
        before_all = api_requests(plane)
        cpu_before = cpu_by_component(plane, nodes)
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            latencies = list(pool.map(attach, range(pods)))
        elapsed = time.perf_counter() - started
        cpu_after = cpu_by_component(plane, nodes)
        after = api_writes(plane)
        after_all = api_requests(plane)
    pool_writes = after.get("ippools", 0) - before.get("ippools", 0)
    reservation_writes = after.get("overlappingrangeipreservations", 0) - before.get(
        "overlappingrangeipreservations", 0
    )
    lease_writes = after.get("leases", 0) - before.get("leases", 0)
    listed = json.loads(plane.kubectl("get", "ippools", "-n", namespace, "-o", "json").stdout)
    held = sum(len(item["spec"]["allocations"]) for item in listed["items"])
    assert held == pods, f"{held} allocations recorded for {pods} ADDs"
    print(
        f"{pods} ADDs into {cidr}, {node_count} daemons, concurrency {concurrency}, "
        f"pool leases={mode}:\n"
        f"    {pods / elapsed:7.1f} allocations/s   {summary(latencies)}\n"
        f"    IPPool writes {pool_writes} ({pool_writes / pods:.3f}/allocation), "
        f"reservation writes {reservation_writes} ({reservation_writes / pods:.3f}/allocation), "
        f"Lease writes {lease_writes} ({lease_writes / pods:.3f}/allocation)\n"
        f"    requests: {request_breakdown(before_all, after_all)}\n"
        "    CPU ms per allocation: "
        + ", ".join(
            f"{name} {(cpu_after[name] - cpu_before[name]) / pods * 1000:.2f}" for name in cpu_after
        )
    )


def bench_fill(plane: ControlPlane, workdir: Path, *, pods: int, node_count: int) -> None:
    """Fill a /16 with ``pods`` live allocations; show that no object grows large."""
    namespace = "bench-fill"
    plane.kubectl("create", "namespace", namespace)
    names = [f"node-{i}" for i in range(node_count)]
    net = config({"type": "whereabouts", "range": "10.240.0.0/16"})
    step = max(pods // 6, 1)
    with SimulatedNodes(plane, workdir / "nodes-fill", names, namespace) as nodes:

        def attach(i: int) -> float:
            return timed_add(nodes[names[i % node_count]].socket, net, i, timeout_s=120)

        done = 0
        with ThreadPoolExecutor(max_workers=100) as pool:
            while done < pods:
                batch = range(done, min(done + step, pods))
                started = time.perf_counter()
                latencies = list(pool.map(attach, batch))
                elapsed = time.perf_counter() - started
                done = batch.stop
                print(
                    f"  {done:6d} live: {len(batch) / elapsed:6.1f} allocations/s, "
                    f"{summary(latencies)}",
                    flush=True,
                )
    listed = json.loads(plane.kubectl("get", "ippools", "-n", namespace, "-o", "json").stdout)
    sizes = [len(json.dumps(item)) for item in listed["items"]]
    held = sum(len(item["spec"]["allocations"]) for item in listed["items"])
    print(
        f"{held} allocations in one /16 stored in {len(sizes)} IPPool objects; "
        f"largest object {max(sizes) / 1024:.1f} KiB, "
        f"all together {sum(sizes) / 1024 / 1024:.1f} MiB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--runs", type=int, default=100, help="samples for the shim figures")
    parser.add_argument(
        "--modes",
        default="auto,never,always",
        help="pool-lease modes to compare on one contended /24",
    )
    parser.add_argument(
        "--fill",
        type=int,
        default=0,
        help="also fill a /16 with this many live allocations (e.g. 60000; takes minutes)",
    )
    options = parser.parse_args()
    python = platform.python_version()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {python}")
    print(f"kernel: {platform.platform()}")
    with tempfile.TemporaryDirectory(prefix="wb-bench-") as scratch, running() as plane:
        workdir = Path(scratch)
        bench_shim(plane, workdir, options.runs)
        # A large range: every node writes its own 64-address block.
        bench_load(
            plane,
            workdir,
            pods=options.pods,
            node_count=options.nodes,
            concurrency=options.concurrency,
            mode="auto",
        )
        # One /24 object that every node writes: where Lease coordination matters.
        for mode in options.modes.split(","):
            bench_load(
                plane,
                workdir,
                pods=250,
                node_count=options.nodes,
                concurrency=options.concurrency,
                mode=mode,
                cidr="10.202.0.0/24",
            )
        if options.fill:
            bench_fill(plane, workdir, pods=options.fill, node_count=options.nodes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
