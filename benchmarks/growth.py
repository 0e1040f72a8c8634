"""How our costs grow with the cluster: the reconciler to 10,000 pods, daemons to 100 nodes.

    .venv/bin/python benchmarks/growth.py --quick   # small sizes, under 3 minutes
    .venv/bin/python benchmarks/growth.py           # 1k/5k/10k pods x 100/1k pools; 10/50/100 nodes
    .venv/bin/python benchmarks/growth.py --pods 1000,5000 --nodes 10,50 --skip daemons

One local control plane (kube-apiserver on etcd), figures printed, nothing asserted.

(a) Reconciler. Pods are created as API objects (bound to a node name, no
kubelet), each holding one address: entries written into /24 IPPools spread
over 100 or 1,000 pool objects, with their reservations, as the daemons
write them. At each size a reconciler process starts (its start-up: the
listing of pools, reservations and pods, and the first sweep), then extra
pods holding an address are deleted one at a time, then as many all at once
(a burst, 8 DELETEs in flight); the release latency is from the DELETE's
answer to the reconciler's "released" log line (written after its write;
for the burst, by the line's own timestamp). API requests and bytes per deletion are the apiserver's
own counts (``apiserver_request_total``, ``apiserver_response_sizes`` of
reads and ``apiserver_request_body_size_bytes`` of writes) over the
deletions, without the benchmark's own pod DELETEs, watches and the
leader's Lease renewals (shown apart). CPU and RSS are the reconciler
process's (``/proc``).

(b) Daemons. N simulated nodes (one daemon process each,
``SimulatedNodes``) allocate through their sockets on one /16 (stored in
blocks) and on 20 /24s (every daemon writes every /24): allocations/s,
latency p50/p99, API requests per allocation by resource, daemon RSS.
(c) After the ADDs, every attachment is deleted again (churn): the
IPPools, reservations and Leases left in the namespace are counted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import netaddr
from kubernetes import client

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ipam_bench import config, cpu_seconds, percentile, timed_add

from whereabouts_py.cni import wire
from whereabouts_py.core.allocator import Allocation
from whereabouts_py.core.codec import pool_name, reservation_name
from whereabouts_py.errors import AlreadyExistsError, ConflictError
from whereabouts_py.store.kube import KubeStore, connect
from whereabouts_py_dev.controlplane import ControlPlane, running, spawn_tied
from whereabouts_py_dev.nodes import SimulatedNodes
from whereabouts_py_dev.runtime import pod_args

PODS_NAMESPACE = "growth-pods"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
WORKERS = 12  # concurrent requests when setting up (the machine has 2 cores)
OURS = ("ippools", "overlappingrangeipreservations")


# --- the apiserver's own figures -------------------------------------------------------------


@dataclass
class ApiFigures:
    """Requests by (resource, verb) and bytes (read responses + write bodies) by resource."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    bytes: Counter[tuple[str, str]] = field(default_factory=Counter)

    def __sub__(self, other: ApiFigures) -> ApiFigures:
        return ApiFigures(self.requests - other.requests, self.bytes - other.bytes)


_LABELS = re.compile(r'(\w+)="([^"]*)"')


def api_figures(plane: ControlPlane) -> ApiFigures:
    context = ssl.create_default_context(cafile=str(plane.ca_file))
    context.check_hostname = False
    request = urllib.request.Request(f"{plane.server}/metrics")
    request.add_header("Authorization", f"Bearer {plane.token()}")
    with urllib.request.urlopen(request, context=context, timeout=20) as answer:
        text = answer.read().decode()
    figures = ApiFigures()
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name not in {
            "apiserver_request_total",
            "apiserver_response_sizes_sum",
            "apiserver_request_body_size_bytes_sum",
        }:
            continue
        labels = dict(_LABELS.findall(rest))
        key = (labels.get("resource", ""), labels.get("verb", ""))
        value = int(float(line.rsplit(" ", 1)[1]))
        if name == "apiserver_request_total":
            figures.requests[key] += value
        else:
            figures.bytes[key] += value
    return figures


def rss_mb(pid: int) -> tuple[float, float]:
    """Resident and peak resident memory of a process, MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def control_plane_cpu(plane: ControlPlane) -> float:
    """CPU seconds of kube-apiserver and etcd together."""
    return cpu_seconds(plane.pids["kube-apiserver"]) + cpu_seconds(plane.pids["etcd"])


def parallel(action: Callable[[Any], Any], items: Iterable[Any], workers: int = WORKERS) -> None:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(action, items):
            pass


# --- (a) the reconciler ------------------------------------------------------------------------


def create_pods(core: client.CoreV1Api, names: Sequence[str]) -> dict[str, str]:
    """Create bound pods (no kubelet runs them); their UIDs by name."""
    uids: dict[str, str] = {}
    lock = threading.Lock()

    def create(name: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": PAUSE_IMAGE}]},
        }
        made = core.create_namespaced_pod(PODS_NAMESPACE, body)
        with lock:
            uids[name] = str(made.metadata.uid)

    parallel(create, names)
    return uids


class Pools:
    """The pools of one namespace as the benchmark wrote them (one write per pool per step)."""

    def __init__(self, store: KubeStore, count: int) -> None:
        self.store = store
        self.count = count

    @staticmethod
    def cidr(index: int) -> str:
        return f"10.{100 + index // 256}.{index % 256}.0/24"

    def add(self, entries: Sequence[tuple[int, int, Allocation]]) -> dict[str, str]:
        """Write (pool index, offset, holder) entries and their reservations; address by pod."""
        by_pool: dict[int, dict[int, Allocation]] = {}
        for index, offset, holder in entries:
            by_pool.setdefault(index, {})[offset] = holder

        def write(index: int) -> None:
            cidr = self.cidr(index)
            for _ in range(10):  # the reconciler writes these pools too
                snapshot = self.store.get_pool(pool_name(cidr), cidr)
                try:
                    self.store.write_pool(snapshot, {**snapshot.allocations, **by_pool[index]})
                    return
                except ConflictError:
                    time.sleep(0.05)
            raise RuntimeError(f"IPPool {cidr} kept changing")

        parallel(write, sorted(by_pool))
        addresses: dict[str, str] = {}
        reservations = []
        for index, offset, holder in entries:
            network = netaddr.IPNetwork(self.cidr(index))
            address = str(netaddr.IPAddress(int(network.network) + offset))
            addresses[holder.podref.split("/", 1)[1]] = address
            reservations.append((reservation_name(address), holder))

        def reserve(item: tuple[str, Allocation]) -> None:
            with contextlib.suppress(AlreadyExistsError):
                self.store.create_reservation(*item)

        parallel(reserve, reservations)
        return addresses


@dataclass
class ReconcilerRun:
    process: subprocess.Popen[bytes]
    log: Path
    offset: int = 0

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout_s: float, poll_s: float = 0.005) -> float:
        """Seconds until ``needle`` appears in the log after what was read before."""
        started = time.perf_counter()
        with self.log.open("rb") as handle:
            handle.seek(self.offset)
            pending = b""
            wanted = needle.encode()
            while True:
                chunk = handle.read()
                if chunk:
                    pending += chunk
                    found = pending.find(wanted)
                    if found >= 0:
                        self.offset += found + len(wanted)
                        return time.perf_counter() - started
                elif time.perf_counter() - started > timeout_s:
                    raise TimeoutError(f"no {needle!r} in {self.log} within {timeout_s:.0f}s")
                elif self.process.poll() is not None:
                    raise RuntimeError(f"reconciler exited: {self.text()[-2000:]}")
                else:
                    time.sleep(poll_s)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_reconciler(plane: ControlPlane, namespace: str, log: Path) -> ReconcilerRun:
    command = [
        sys.executable,
        "-m",
        "whereabouts_py",
        "reconciler",
        "--kubeconfig",
        str(plane.kubeconfig),
        "--namespace",
        namespace,
        "--identity",
        "growth",
        "--sweep-interval",
        "3600",
        "--lease-duration",
        "15",
    ]
    return ReconcilerRun(spawn_tied(command, log), log)


def reconciler_curve(
    plane: ControlPlane,
    workdir: Path,
    pod_counts: Sequence[int],
    pool_counts: Sequence[int],
    deletions: int,
) -> list[dict[str, Any]]:
    api = connect(str(plane.kubeconfig), pool_size=WORKERS + 4)
    core = client.CoreV1Api(api)
    plane.kubectl("create", "namespace", PODS_NAMESPACE)
    largest = max(pod_counts)
    started = time.perf_counter()
    uids = create_pods(core, [f"h{i}" for i in range(largest)])
    print(f"  created {largest} pods in {time.perf_counter() - started:.0f} s", flush=True)
    rows = []
    for pools_count in pool_counts:
        namespace = f"growth-p{pools_count}"
        plane.kubectl("create", "namespace", namespace)
        pools = Pools(KubeStore(api, namespace), pools_count)
        held = 0
        for point, pods_count in enumerate(pod_counts):
            setup = time.perf_counter()
            pools.add(
                [
                    (i % pools_count, i // pools_count + 1, holder(f"h{i}", uids[f"h{i}"]))
                    for i in range(held, pods_count)
                ]
            )
            held = pods_count
            # The first half is deleted one at a time, the second all at once.
            victims = [f"v{pools_count}-{pods_count}-{j}" for j in range(2 * deletions)]
            victim_uids = create_pods(core, victims)
            per_pool = -(-len(victims) // pools_count)
            base = 254 - per_pool * (point + 1) + 1
            addresses = pools.add(
                [
                    (j % pools_count, base + j // pools_count, holder(name, victim_uids[name]))
                    for j, name in enumerate(victims)
                ]
            )
            print(
                f"  {pods_count} pods + {deletions} to delete in {pools_count} pools: "
                f"set up in {time.perf_counter() - setup:.0f} s",
                flush=True,
            )
            row = measure_reconciler(
                plane,
                core,
                workdir / f"reconciler-{pools_count}-{pods_count}.log",
                namespace,
                victims,
                addresses,
            )
            row.update(pods=pods_count, pools=pools_count)
            rows.append(row)
            print_reconciler_row(row, deletions)
    api.close()
    return rows


def holder(pod: str, uid: str) -> Allocation:
    return Allocation(f"ctr-{pod}", f"{PODS_NAMESPACE}/{pod}", "net1", node="node-a", pod_uid=uid)


RELEASED = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*released address=(\S+) ", re.MULTILINE
)


def burst_latencies(
    run: ReconcilerRun, core: client.CoreV1Api, victims: Sequence[str], addresses: dict[str, str]
) -> list[float]:
    """Delete ``victims`` all at once; each one's seconds from its DELETE's answer to
    the reconciler's log line (its own timestamp) of the release."""
    deleted_at: dict[str, float] = {}
    by_address = {addresses[name]: name for name in victims}

    def kill(name: str) -> None:
        core.delete_namespaced_pod(name, PODS_NAMESPACE, grace_period_seconds=0)
        deleted_at[name] = time.time()

    offset = run.log.stat().st_size
    parallel(kill, victims, workers=8)
    released: dict[str, float] = {}
    deadline = time.monotonic() + 120
    while len(released) < len(victims):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(victims) - len(released)} burst releases not seen")
        time.sleep(0.05)
        with run.log.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
        for stamp, address in RELEASED.findall(text):
            name = by_address.get(address)
            if name is not None and name not in released:
                moment = dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
                released[name] = moment
    return [max(0.0, released[name] - deleted_at[name]) for name in victims]


def measure_reconciler(  # noqa: PLR0917
    plane: ControlPlane,
    core: client.CoreV1Api,
    log: Path,
    namespace: str,
    victims: Sequence[str],
    addresses: dict[str, str],
) -> dict[str, Any]:
    half = len(victims) // 2
    victims, burst = victims[:half], victims[half:]
    run = start_reconciler(plane, namespace, log)
    try:
        started = time.perf_counter()
        run.wait_for("sweep finished", timeout_s=600)
        ready_s = time.perf_counter() - started
        sweep = re.findall(r"sweep finished .* seconds=([0-9.]+)", run.text())
        startup_cpu = cpu_seconds(run.process.pid)
        startup_rss, _ = rss_mb(run.process.pid)
        time.sleep(1.0)  # let the pod watch settle after its initial listing
        before = api_figures(plane)
        cpu_before = cpu_seconds(run.process.pid)
        plane_before = control_plane_cpu(plane)
        latencies = []
        for name in victims:
            core.delete_namespaced_pod(name, PODS_NAMESPACE, grace_period_seconds=0)
            latencies.append(run.wait_for(f"released address={addresses[name]} ", timeout_s=60))
        cpu_after = cpu_seconds(run.process.pid)
        plane_after = control_plane_cpu(plane)
        time.sleep(0.5)  # the Events are posted after the release
        after = api_figures(plane)
        rss, peak = rss_mb(run.process.pid)
        burst_before = api_figures(plane)
        in_burst = burst_latencies(run, core, burst, addresses)
        time.sleep(0.5)
        burst_after = api_figures(plane)
        rss, peak = rss_mb(run.process.pid)
    finally:
        run.stop()
    burst_requests = sum(
        value
        for key, value in (burst_after - burst_before).requests.items()
        if value > 0
        and key[1] not in {"WATCH", "CONNECT"}
        and key[0] not in {"leases", ""}
        and key != ("pods", "DELETE")
    )
    delta = after - before
    mine = Counter(
        {
            key: value
            for key, value in delta.requests.items()
            if value > 0
            and key[1] not in {"WATCH", "CONNECT"}
            and key[0] != "leases"
            and key != ("pods", "DELETE")
            and key[0] != ""
        }
    )
    data = sum(
        value
        for key, value in delta.bytes.items()
        if value > 0 and key[1] != "WATCH" and key[0] != "leases" and key != ("pods", "DELETE")
    )
    return {
        "ready_s": ready_s,
        "sweep_s": float(sweep[0]) if sweep else float("nan"),
        "startup_cpu_s": startup_cpu,
        "startup_rss_mb": startup_rss,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "burst_p50_ms": percentile(in_burst, 0.5) * 1000,
        "burst_p99_ms": percentile(in_burst, 0.99) * 1000,
        "burst_requests": burst_requests / len(burst),
        "requests": mine,
        "lease_requests": sum(v for k, v in delta.requests.items() if k[0] == "leases" and v > 0),
        "bytes": data,
        "cpu_ms_per_deletion": (cpu_after - cpu_before) / len(victims) * 1000,
        "plane_ms_per_deletion": (plane_after - plane_before) / len(victims) * 1000,
        "rss_mb": rss,
        "peak_rss_mb": peak,
    }


def print_reconciler_row(row: dict[str, Any], deletions: int) -> None:
    requests: Counter[tuple[str, str]] = row["requests"]
    total = sum(requests.values())
    without_events = total - requests[("events", "POST")]
    breakdown = ", ".join(f"{r} {v}: {n / deletions:.2f}" for (r, v), n in sorted(requests.items()))
    print(
        f"  -> release p50 {row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms one at a time; "
        f"{deletions} at once: p50 {row['burst_p50_ms']:.0f} ms, p99 "
        f"{row['burst_p99_ms']:.0f} ms, {row['burst_requests']:.2f} requests/deletion;\n     "
        f"{total / deletions:.2f} requests/deletion ({without_events / deletions:.2f} without "
        f"Events), {row['bytes'] / deletions / 1024:.1f} KiB/deletion; "
        f"CPU {row['cpu_ms_per_deletion']:.1f} ms/deletion (apiserver+etcd "
        f"{row['plane_ms_per_deletion']:.1f}); RSS {row['rss_mb']:.0f} MB "
        f"(peak {row['peak_rss_mb']:.0f}); start-up {row['ready_s']:.1f} s "
        f"(CPU {row['startup_cpu_s']:.1f} s), sweep {row['sweep_s']:.2f} s\n"
        f"     per deletion: {breakdown}; leader Lease requests meanwhile "
        f"{row['lease_requests']}",
        flush=True,
    )


# --- (b) and (c) the daemons ---------------------------------------------------------------


def delete_call(socket: Path, net: dict[str, Any], i: int, *, timeout_s: float) -> float:
    """The DEL of what ``ipam_bench.timed_add`` added for pod-<i>; its latency in seconds."""
    request = {
        "command": "DEL",
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


def count_objects(plane: ControlPlane, namespace: str) -> dict[str, int]:
    counts = {}
    for kind in ("ippools", "overlappingrangeipreservations", "leases"):
        listed = plane.kubectl("get", kind, "-n", namespace, "-o", "json").stdout
        counts[kind] = len(json.loads(listed)["items"])
    return counts


def daemon_curve(
    plane: ControlPlane,
    workdir: Path,
    node_counts: Sequence[int],
    allocations: int,
    concurrency: int,
) -> list[dict[str, Any]]:
    layouts: list[tuple[str, list[dict[str, Any]]]] = [
        ("one /16", [config({"type": "whereabouts", "range": "10.64.0.0/16"})]),
        (
            "20 /24s",
            [config({"type": "whereabouts", "range": f"10.65.{k}.0/24"}) for k in range(20)],
        ),
    ]
    rows = []
    for count in node_counts:
        namespace = f"growth-n{count}"
        plane.kubectl("create", "namespace", namespace)
        names = [f"node-{i}" for i in range(count)]
        started = time.perf_counter()
        with SimulatedNodes(plane, workdir / f"nodes-{count}", names, namespace) as nodes:
            start_s = time.perf_counter() - started
            pids = [daemon.process.pid for daemon in nodes.daemons.values()]
            idle = [rss_mb(pid)[0] for pid in pids]
            print(
                f"  {count} daemons started in {start_s:.0f} s, idle RSS mean "
                f"{sum(idle) / len(idle):.0f} MB",
                flush=True,
            )
            seen = count_objects(plane, namespace)
            for label, nets in layouts:
                sockets = [nodes[name].socket for name in names]

                def add(
                    i: int, nets: list[dict[str, Any]] = nets, sockets: list[Path] = sockets
                ) -> float:
                    socket = sockets[i % len(sockets)]
                    return timed_add(socket, nets[i % len(nets)], i, timeout_s=120)

                def delete(
                    i: int, nets: list[dict[str, Any]] = nets, sockets: list[Path] = sockets
                ) -> float:
                    socket = sockets[i % len(sockets)]
                    return delete_call(socket, nets[i % len(nets)], i, timeout_s=120)

                before = api_figures(plane)
                cpu_before = sum(cpu_seconds(pid) for pid in pids)
                plane_before = control_plane_cpu(plane)
                began = time.perf_counter()
                with ThreadPoolExecutor(max_workers=concurrency) as pool:
                    latencies = list(pool.map(add, range(allocations)))
                elapsed = time.perf_counter() - began
                after = api_figures(plane)
                cpu_after = sum(cpu_seconds(pid) for pid in pids)
                plane_after = control_plane_cpu(plane)
                rss = [rss_mb(pid)[0] for pid in pids]
                with ThreadPoolExecutor(max_workers=concurrency) as pool:
                    del_latencies = list(pool.map(delete, range(allocations)))
                objects = count_objects(plane, namespace)
                churned = {kind: objects[kind] - seen[kind] for kind in objects}
                seen = objects
                requests = Counter(
                    {
                        key: value
                        for key, value in (after - before).requests.items()
                        if value > 0 and key[0] and key[1] != "WATCH"
                    }
                )
                row = {
                    "nodes": count,
                    "layout": label,
                    "rate": allocations / elapsed,
                    "p50_ms": percentile(latencies, 0.5) * 1000,
                    "p99_ms": percentile(latencies, 0.99) * 1000,
                    "del_p99_ms": percentile(del_latencies, 0.99) * 1000,
                    "requests": requests,
                    "cpu_ms": (cpu_after - cpu_before) / allocations * 1000,
                    "plane_ms": (plane_after - plane_before) / allocations * 1000,
                    "rss_mean": sum(rss) / len(rss),
                    "rss_max": max(rss),
                    "objects": churned,
                }
                rows.append(row)
                print_daemon_row(row, allocations)
    return rows


def print_daemon_row(row: dict[str, Any], allocations: int) -> None:
    requests: Counter[tuple[str, str]] = row["requests"]
    total = sum(requests.values())
    breakdown = ", ".join(
        f"{r} {v}: {n / allocations:.2f}" for (r, v), n in sorted(requests.items())
    )
    objects = row["objects"]
    print(
        f"  -> {row['nodes']} nodes, {row['layout']}: {row['rate']:.0f} allocations/s, "
        f"p50 {row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms (DEL p99 "
        f"{row['del_p99_ms']:.0f} ms); {total / allocations:.2f} requests/allocation; "
        f"daemon CPU {row['cpu_ms']:.1f} ms/allocation (apiserver+etcd "
        f"{row['plane_ms']:.1f}); daemon RSS mean "
        f"{row['rss_mean']:.0f} MB, max {row['rss_max']:.0f} MB\n"
        f"     per allocation: {breakdown}\n"
        f"     left after ADD+DEL of all: IPPools {objects['ippools']}, reservations "
        f"{objects['overlappingrangeipreservations']}, Leases {objects['leases']}",
        flush=True,
    )


# --- the tables ------------------------------------------------------------------------------


def print_tables(
    reconciler: list[dict[str, Any]], daemons: list[dict[str, Any]], deletions: int
) -> None:
    if reconciler:
        print("\nReconciler (one deletion at a time):")
        print(
            "| pods | pools | release p50 / p99 | burst p50 / p99 | requests/deletion "
            "(w/o Events; burst) "
            "| KiB/deletion | CPU ms/deletion (apiserver+etcd) | RSS MB (peak) | start-up s "
            "| sweep s |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for row in reconciler:
            total = sum(row["requests"].values())
            events = row["requests"][("events", "POST")]
            print(
                f"| {row['pods']:,} | {row['pools']:,} "
                f"| {row['p50_ms']:.0f} / {row['p99_ms']:.0f} ms "
                f"| {row['burst_p50_ms']:.0f} / {row['burst_p99_ms']:.0f} ms "
                f"| {total / deletions:.2f} ({(total - events) / deletions:.2f}; "
                f"{row['burst_requests']:.2f}) | {row['bytes'] / deletions / 1024:.1f} "
                f"| {row['cpu_ms_per_deletion']:.1f} ({row['plane_ms_per_deletion']:.1f}) "
                f"| {row['rss_mb']:.0f} ({row['peak_rss_mb']:.0f}) "
                f"| {row['ready_s']:.1f} | {row['sweep_s']:.2f} |"
            )
    if daemons:
        print("\nDaemons (allocations through the sockets):")
        print(
            "| nodes | layout | allocations/s | p50 | p99 | requests/allocation "
            "| daemon CPU ms/allocation (apiserver+etcd) | daemon RSS mean (max) MB "
            "| IPPools / reservations / Leases after churn |"
        )
        print("|---:|---|---:|---:|---:|---:|---:|---:|---|")
        for row in daemons:
            allocations = row["allocations"]
            objects = row["objects"]
            print(
                f"| {row['nodes']} | {row['layout']} | {row['rate']:.0f} | {row['p50_ms']:.0f} ms "
                f"| {row['p99_ms']:.0f} ms | {sum(row['requests'].values()) / allocations:.2f} "
                f"| {row['cpu_ms']:.1f} ({row['plane_ms']:.1f}) "
                f"| {row['rss_mean']:.0f} ({row['rss_max']:.0f}) "
                f"| {objects['ippools']} / {objects['overlappingrangeipreservations']} / "
                f"{objects['leases']} |"
            )


def sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (under 3 minutes)")
    parser.add_argument("--pods", help="pods holding addresses (default 1000,5000,10000)")
    parser.add_argument("--pools", help="pool objects they spread over (default 100,1000)")
    parser.add_argument("--nodes", help="simulated nodes (default 10,50,100)")
    parser.add_argument("--deletions", type=int, help="pod deletions measured per size (100)")
    parser.add_argument("--allocations", type=int, help="ADDs per node count and layout (1000)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--skip", default="", help="'reconciler' or 'daemons'")
    options = parser.parse_args()
    quick = options.quick
    pods = sizes(options.pods or ("200,1000" if quick else "1000,5000,10000"))
    pools = sizes(options.pools or ("20,100" if quick else "100,1000"))
    nodes = sizes(options.nodes or ("3,6" if quick else "10,50,100"))
    deletions = options.deletions or (20 if quick else 100)
    allocations = options.allocations or (200 if quick else 1000)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    began = time.perf_counter()
    reconciler_rows: list[dict[str, Any]] = []
    daemon_rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="wb-growth-") as scratch, running() as plane:
        workdir = Path(scratch)
        if "reconciler" not in options.skip:
            print(f"(a) reconciler: {pods} pods x {pools} pools, {deletions} deletions each")
            reconciler_rows = reconciler_curve(plane, workdir, pods, pools, deletions)
        if "daemons" not in options.skip:
            print(f"(b, c) daemons: {nodes} nodes, {allocations} ADDs then DELs per layout")
            daemon_rows = daemon_curve(plane, workdir, nodes, allocations, options.concurrency)
            for row in daemon_rows:
                row["allocations"] = allocations
    print_tables(reconciler_rows, daemon_rows, deletions)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"took {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
