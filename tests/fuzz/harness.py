"""Seeded fuzzing of the real CNI shim and a real node daemon on the local control plane.

    .venv/bin/python -m tests.fuzz.harness --cases 10000 [--seed 1] [--workers 4]

Each case is generated from the seed and its number alone (so any failure can
be replayed with ``--only N``): a valid network configuration with one to
three keys given wrong types or odd values (the IPAM keys, routes, dns,
addresses, ipRanges entries, the top-level keys), sometimes odd ``CNI_*``
variables, sometimes odd stdin bytes (flipped, truncated, other encodings,
deep nesting, over 4 MiB), for every verb. The installed shim runs it against
one daemon, and every case must end with:

* exactly one valid answer: ADD prints a result with addresses, VERSION its
  versions, the other verbs nothing; or one CNI error object whose code is a
  spec or documented code, never 999;
* no "Traceback" from the shim or in the daemon's log, and the daemon alive;
* no IPPool entry or reservation left for the container of a failed ADD; a
  successful ADD is deleted with the same input and must leave nothing.

Generated ranges stay at most a /16 (IPv6 /112), so that a case measures input
handling, not the size of an address space. Prints a summary; exits 1 when any
case broke a rule.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whereabouts_py.cni import wire
from whereabouts_py.cni.install import install_cni
from whereabouts_py.cni.shim import TIMEOUT_ENV
from whereabouts_py.errors import ApiUnavailableError
from whereabouts_py.store.kube import KubeStore, connect
from whereabouts_py_dev.controlplane import ControlPlane, running
from whereabouts_py_dev.nodes import NodeDaemon, SimulatedNodes
from whereabouts_py_dev.runtime import Outcome, pod_args

NAMESPACE = "fuzz"
SPEC_CODES = frozenset({1, 2, 3, 4, 5, 6, 7, 11, 50, 51, 100, 101, 102, 103, 104})
VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
RANGES = ("10.201.0.0/24", "10.202.0.0/28", "10.203.0.0/16", "fd00:f0::/120", "fd00:f1::/112")

ODD_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 7, 2**31, 2**63, -(2**63), 1.5, -0.0, 1e308,
    "", " ", "x", "X" * 300, "\u0000", "\u00e9t\u00e9", "\U0001f600", "\ud800", "\\", "%2F",
    "../../x", "x/../10.201.0.0-24?", "Upper", "a b", "a/b", "-", "a" * 260,
    [], [1], [None], ["a"], [[]], [{}], {}, {"a": 1}, {"dst": 1},
    "10.0.0.0/8", "0.0.0.0/0", "::/0", "10.201.0.5", "010.201.000.5", "10.201.0.0/33",
    "fd00:f0::5", "FD00:F0::/120", "10.201.0.5-10.201.0.9/24", "\u0661\u0660.0.0.0/24",
)  # fmt: skip
IPAM_KEYS = (
    "type", "range", "range_start", "range_end", "exclude", "ipRanges", "gateway",
    "network_name", "enable_overlapping_ranges", "kubernetes", "configuration_path",
    "log_file", "log_level", "leader_lease_duration", "leader_renew_deadline",
    "leader_retry_period", "reconciler_cron_expression", "node_slice_size", "sleep_for_race",
    "routes", "dns", "addresses", "daemon_socket", "datastore", "etcd_host", "unknown_key",
)  # fmt: skip
TOP_KEYS = ("cniVersion", "name", "type", "ipam", "runtimeConfig", "args", "plugins",
            "cni.dev/valid-attachments", "prevResult", "cniVersions")  # fmt: skip
VERBS = ("ADD",) * 12 + ("DEL",) * 3 + ("CHECK", "CHECK", "GC", "STATUS", "VERSION", "add", "")


@dataclass(frozen=True)
class Case:
    number: int
    command: str
    stdin: bytes
    env: dict[str, str]
    container_id: str
    kind: str  # what was mutated, for the summary


@dataclass
class Report:
    cases: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    tracebacks: int = 0
    internal_errors: int = 0
    leftovers: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, case: Case, problem: str) -> None:
        with self.lock:
            self.failures.append(f"case {case.number} ({case.kind}, {case.command}): {problem}")


# --- generation ------------------------------------------------------------------------------
def _odd(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.random()
    if choice < 0.75 or depth > 2:
        return rng.choice(ODD_VALUES)
    if choice < 0.85:
        return [_odd(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if choice < 0.95:
        return {rng.choice(("dst", "gw", "range", "address", "x")): _odd(rng, depth + 1)}
    nested: Any = []
    for _ in range(rng.choice((10, 70, 200))):
        nested = [nested]
    return nested


def _odd_address(rng: random.Random, text: str) -> str:
    mutation = rng.randrange(6)
    if mutation == 0:
        return ".".join(f"00{part}" for part in text.split("."))
    if mutation == 1:
        return f" {text} "
    if mutation == 2:
        return text.upper()
    if mutation == 3:
        return text[: rng.randrange(len(text) + 1)]
    if mutation == 4:
        position = rng.randrange(len(text))
        return text[:position] + rng.choice("x:/.-0\u0661") + text[position + 1 :]
    return text * 2


def _base_config(rng: random.Random) -> dict[str, Any]:
    address_range = rng.choice(RANGES)
    ipam: dict[str, Any] = {"type": "whereabouts", "range": address_range}
    network = address_range.split("/")[0]
    host = network[:-1] + "9" if network.endswith("0") else network + "9"
    extras: dict[str, Any] = {
        "gateway": network[:-1] + "1",
        "exclude": [host],
        "routes": [{"dst": "0.0.0.0/0" if "." in network else "::/0"}],
        "dns": {"nameservers": ["10.0.0.10"], "search": ["svc"]},
        "network_name": rng.choice(("fz", "fz.blue", "fz-1")),
        "range_start": network[:-1] + "2",
        "ipRanges": [{"range": rng.choice(RANGES)}],
        "enable_overlapping_ranges": rng.random() < 0.5,
        "addresses": [{"address": "10.9.0.1/24"}],
        "log_level": "debug",
    }
    for key in rng.sample(sorted(extras), rng.randint(0, 3)):
        ipam[key] = extras[key]
    if "ipRanges" in ipam and rng.random() < 0.5:
        del ipam["range"]
    return {"cniVersion": rng.choice(VERSIONS), "name": "fuzznet", "type": "macvlan", "ipam": ipam}


def _mutate_config(rng: random.Random, config: dict[str, Any]) -> str:
    ipam = config["ipam"]
    kinds = []
    for _ in range(rng.randint(1, 3)):
        target = rng.random()
        if target < 0.6:
            key = rng.choice(IPAM_KEYS)
            ipam[key] = _odd(rng)
            kinds.append(f"ipam.{key}")
        elif target < 0.75:
            key = rng.choice(("range", "range_start", "range_end", "gateway"))
            current = ipam.get(key) or rng.choice(RANGES)
            ipam[key] = _odd_address(rng, str(current))
            kinds.append(f"ipam.{key}~")
        elif target < 0.85:
            key = rng.choice(("routes", "ipRanges", "addresses", "dns", "exclude"))
            entry: Any
            if key == "routes":
                entry = [{"dst": _odd(rng), "gw": _odd(rng)}]
            elif key == "ipRanges":
                entry = [{"range": rng.choice(RANGES), "range_start": _odd(rng)}]
            elif key == "addresses":
                entry = [{"address": _odd(rng), "gateway": _odd(rng)}]
            elif key == "dns":
                entry = {"nameservers": _odd(rng), "domain": _odd(rng)}
            else:
                entry = [_odd(rng)]
            ipam[key] = entry
            kinds.append(f"ipam.{key}[]")
        else:
            key = rng.choice(TOP_KEYS)
            config[key] = _odd(rng)
            kinds.append(key)
    return ",".join(sorted(set(kinds)))


def _mutate_stdin(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    mutation = rng.randrange(10)
    if mutation == 0:
        position = rng.randrange(len(data))
        return data[:position] + bytes([rng.randrange(256)]) + data[position + 1 :], "stdin:flip"
    if mutation == 1:
        return data[: rng.randrange(len(data))], "stdin:truncated"
    if mutation == 2:
        encoding = rng.choice(("utf-16", "utf-32", "utf-8-sig", "utf-16-le"))
        return data.decode().encode(encoding), f"stdin:{encoding}"
    if mutation == 3:
        depth = rng.choice((100, 1000, 20000))
        return b'{"cniVersion":"1.0.0","ipam":' + b"[" * depth + b"]" * depth + b"}", "stdin:deep"
    if mutation == 4:
        return rng.choice((b"", b"   ", b"null", b"[]", b"42", b'"x"', b"{}")), "stdin:other"
    if mutation == 5:
        return data.replace(b'"cniVersion"', b'"cniVersion": NaN, "x"', 1), "stdin:nan"
    if mutation == 6:
        return data[:-1] + b', "ipam": {"type": "whereabouts"}}', "stdin:duplicate-key"
    if mutation == 7 and rng.random() < 0.02:
        padding = b', "pad": "' + b"p" * (wire.MAX_STDIN_BYTES + 1) + b'"}'
        return data[:-1] + padding, "stdin:huge"
    if mutation == 8:
        return data.replace(
            b"whereabouts", "wherea\u00fcbouts".encode("latin-1"), 1
        ), "stdin:latin1"
    return b"\xef\xbb\xbf" + data + b"\n\n", "stdin:bom"


def _mutate_env(rng: random.Random, env: dict[str, str]) -> str:
    name = rng.choice(
        ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_ARGS", "CNI_PATH", "TIMEOUT")
    )
    odd = rng.choice(
        (
            "", "../../x", "a/b", "x" * 300, "-lead", "\u00e9", "eth0 ", "a:b", ".", "..",
            "/var/run/netns/wpy-fuzz-missing", "K8S_POD_NAMESPACE=Upper;K8S_POD_NAME=p",
            "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=../x", "garbage", "IP=10.201.0.300",
            "IP=010.201.0.5", "IgnoreUnknown=1;IP=fd00:f0::7", "K8S_POD_UID=" + "u" * 200,
        )
    )  # fmt: skip
    if name == "TIMEOUT":  # only values the shim refuses: a short timeout orphans work
        env[TIMEOUT_ENV] = rng.choice(("abc", "-1", "nan", "inf"))
    else:
        env[name] = odd
    return f"env:{name}"


def generate(seed: int, number: int, socket_path: str) -> Case:
    rng = random.Random(f"{seed}:{number}")
    config = _base_config(rng)
    kinds = [_mutate_config(rng, config)] if rng.random() < 0.85 else ["valid"]
    container_id = f"fz{seed}x{number}"
    env = {
        "CNI_CONTAINERID": container_id,
        "CNI_IFNAME": rng.choice(("net1", "eth0", "net-2")),
        "CNI_NETNS": "/var/run/netns/wpy-fuzz-missing",
        "CNI_ARGS": pod_args("fuzz", f"pod-{number}"),
        "CNI_PATH": "/usr/lib/cni",
        wire.SOCKET_ENV: socket_path,
    }
    if rng.random() < 0.2:
        kinds.append(_mutate_env(rng, env))
        if env["CNI_CONTAINERID"] != container_id and env["CNI_CONTAINERID"]:
            # Still unique per case, so that leftovers are told apart.
            container_id = env["CNI_CONTAINERID"] = f"{env['CNI_CONTAINERID']}{number}"
    command = rng.choice(VERBS)
    if command == "GC" and isinstance(config.get("ipam"), dict):
        # GC frees this node's entries missing from its list: on a network of its
        # own, so that it never races the other cases' ADDs and DELs.
        config["ipam"]["network_name"] = "fz-gc"
    stdin = json.dumps(config).encode()
    if rng.random() < 0.15:
        stdin, kind = _mutate_stdin(rng, stdin)
        kinds.append(kind)
    return Case(number, command, stdin, env, container_id, "+".join(kinds))


# --- running ---------------------------------------------------------------------------------
def _run(shim: Path, case: Case, command: str | None = None) -> Outcome:
    """The shim run as a runtime runs it, with the case's stdin byte for byte."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command or case.command}
    env.update(case.env)
    completed = subprocess.run(
        [str(shim)],
        input=case.stdin,
        env={key: value for key, value in env.items() if value},
        capture_output=True,
        timeout=90,
        check=False,
    )
    stdout = completed.stdout.decode(errors="replace")
    output: dict[str, Any] | None = None
    try:
        parsed = json.loads(stdout) if stdout.strip() else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        output = parsed
    return Outcome(completed.returncode, output, stdout, completed.stderr.decode(errors="replace"))


def _judge(case: Case, outcome: Outcome, command: str, report: Report) -> str:
    """The outcome's label; records a failure when it breaks a rule."""
    text = outcome.stdout + outcome.stderr
    if "Traceback" in text:
        with report.lock:
            report.tracebacks += 1
        report.fail(case, f"traceback from the shim: {text[-500:]}")
    lines = [line for line in outcome.stdout.splitlines() if line.strip()]
    if outcome.returncode == 0:
        if command == "ADD":
            ips = (outcome.output or {}).get("ips")
            if len(lines) != 1 or not ips or not all("/" in ip["address"] for ip in ips):
                report.fail(case, f"ADD succeeded without a valid result: {outcome.stdout[:300]}")
            return "ok"
        if command == "VERSION":
            if not (outcome.output or {}).get("supportedVersions"):
                report.fail(case, f"VERSION without versions: {outcome.stdout[:300]}")
            return "ok"
        if lines:
            report.fail(case, f"{command} succeeded but printed {outcome.stdout[:300]}")
        return "ok"
    error = outcome.output
    if outcome.returncode != 1 or len(lines) != 1 or error is None:
        report.fail(case, f"exit {outcome.returncode} without one error object: {text[:300]}")
        return "broken"
    code = error.get("code")
    if set(error) - {"cniVersion", "code", "msg", "details"} or not isinstance(code, int):
        report.fail(case, f"malformed error object: {outcome.stdout[:300]}")
        return "broken"
    if code == 999:
        with report.lock:
            report.internal_errors += 1
    if code not in SPEC_CODES:
        report.fail(case, f"code {code}: {error.get('msg')} {error.get('details', '')}"[:400])
    return f"code {code}"


def _held_by(store: KubeStore, container_id: str) -> list[str]:
    for attempt in range(20):
        try:
            return _entries_of(store, container_id)
        except ApiUnavailableError:  # e.g. "storage is (re)initializing" right after start
            if attempt == 19:
                raise
            time.sleep(0.5)
    return []


def _entries_of(store: KubeStore, container_id: str) -> list[str]:
    held = [
        f"IPPool {pool.name}[{offset}]"
        for pool in store.list_pools()
        for offset, holder in pool.allocations.items()
        if holder.container_id == container_id
    ]
    held += [
        f"reservation {reservation.name}"
        for reservation in store.list_reservations()
        if reservation.holder.container_id == container_id
    ]
    return held


def run_case(shim: Path, store: KubeStore, case: Case, report: Report) -> None:
    outcome = _run(shim, case)
    label = _judge(case, outcome, case.command, report)
    added = case.command == "ADD" and outcome.ok
    if added:
        deleted = _run(shim, case, "DEL")
        if not deleted.ok:
            report.fail(case, f"DEL of a successful ADD failed: {deleted.stdout[:300]}")
        _judge(case, deleted, "DEL", report)
    if case.command == "ADD":
        left = _held_by(store, case.container_id)
        if left:
            with report.lock:
                report.leftovers += len(left)
            why = "after its DEL" if added else "by a failed ADD"
            report.fail(case, f"left {why}: {', '.join(left)}")
    with report.lock:
        report.cases += 1
        report.outcomes[f"{case.command or '(none)'} {label}"] += 1
        for kind in case.kind.split("+"):
            report.kinds[kind.split(",")[0].split(":")[0]] += 1


class LogWatch:
    """Counts "Traceback" in the daemon's log as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.tracebacks = 0

    def poll(self) -> list[str]:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        cut = data.rfind(b"\n") + 1
        self.offset += cut
        text = data[:cut].decode(errors="replace")
        found = text.count("Traceback")
        self.tracebacks += found
        return [text[max(0, text.find("Traceback") - 300) :][:1500]] if found else []


def fuzz(
    plane: ControlPlane,
    workdir: Path,
    *,
    cases: int,
    seed: int,
    workers: int,
    only: int | None = None,
    progress: bool = False,
) -> Report:
    """Run ``cases`` generated cases against one fresh daemon; return what happened."""
    plane.kubectl("create", "namespace", NAMESPACE, check=False)
    shim = install_cni(workdir / "bin")
    store = KubeStore(connect(str(plane.kubeconfig)), NAMESPACE)
    report = Report()
    with SimulatedNodes(plane, workdir / "nodes", ["fuzz-node"], NAMESPACE) as nodes:
        daemon: NodeDaemon = nodes["fuzz-node"]
        watch = LogWatch(daemon.log)
        numbers: Iterator[int] = iter([only] if only is not None else range(cases))
        started = time.monotonic()

        def one(number: int) -> None:
            case = generate(seed, number, str(daemon.socket))
            try:
                run_case(shim, store, case, report)
            except Exception as error:  # the harness itself must not stop the run
                report.fail(case, f"harness error: {type(error).__name__}: {error}")
            if daemon.process.poll() is not None:
                report.fail(case, "the daemon died")
            for excerpt in watch.poll():
                report.fail(case, f"traceback in the daemon's log: {excerpt}")
            if progress and number % 500 == 499:
                elapsed = time.monotonic() - started
                print(f"  {report.cases} cases, {elapsed:.0f}s", file=sys.stderr, flush=True)

        in_flight: set[Future[None]] = set()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            try:
                for number in numbers:
                    if len(in_flight) >= 2 * workers:
                        _done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    in_flight.add(pool.submit(one, number))
            except KeyboardInterrupt:  # stop early: the cases run so far are reported
                print("interrupted: finishing the cases in flight", file=sys.stderr)
            wait(in_flight)
        report.tracebacks += watch.tracebacks
    return report


def summary(report: Report, elapsed_s: float, seed: int) -> str:
    lines = [
        f"seed {seed}: {report.cases} cases in {elapsed_s:.0f}s "
        f"({report.cases / max(elapsed_s, 1e-9):.1f}/s)",
        f"tracebacks: {report.tracebacks}, code 999: {report.internal_errors}, "
        f"leftover entries: {report.leftovers}, rule violations: {len(report.failures)}",
        "outcomes: " + ", ".join(f"{k}: {v}" for k, v in sorted(report.outcomes.items())),
        "mutated: " + ", ".join(f"{k}: {v}" for k, v in report.kinds.most_common(12)),
    ]
    lines += report.failures[:20]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--only", type=int, default=None, help="replay one case by its number")
    options = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wpy-fuzz-", dir="/tmp") as scratch, running() as plane:
        report = fuzz(
            plane,
            Path(scratch),
            cases=options.cases,
            seed=options.seed,
            workers=options.workers,
            only=options.only,
            progress=True,
        )
    print(summary(report, time.monotonic() - started, options.seed))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
