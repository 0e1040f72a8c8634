"""Network namespaces and links for the lab: ``ip``, entering a netns, probes, clean-up.

Everything here acts inside namespaces the lab made (named ``wbl-<pid>-...``
so that a later run can remove what a killed one left); the host's own
interfaces are never touched.
"""

from __future__ import annotations

import contextlib
import ctypes
import gzip
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

_CLONE_NEWNET = 0x40000000


class LabError(RuntimeError):
    """The lab could not be built, used or completely removed; the message says what."""


def ip(*argv: str) -> str:
    """Run ``ip argv...``; raise ``LabError`` with its stderr on failure."""
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        said = f"{done.stdout.strip()} {done.stderr.strip()}".strip()
        raise LabError(f"ip {' '.join(argv)} failed ({done.returncode}): {said}")
    return done.stdout


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns: {os.strerror(error)}")


@contextlib.contextmanager
def inside_netns(netns: str) -> Iterator[None]:
    """Move the calling thread into ``netns`` for the block.

    Sockets made inside stay in that netns after the thread moves back. Only
    this thread moves (setns acts per thread), so other threads are unaffected.
    """
    with (
        open("/proc/thread-self/ns/net", "rb") as home,
        open(f"/var/run/netns/{netns}", "rb") as target,
    ):
        _setns(target.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


def kernel_lacks(kind: str) -> str | None:
    """Why this kernel cannot make a link of ``kind`` (e.g. ``ipvlan``), or None if it can.

    Probed in a throwaway netns: a veth pair and the kind on top of it. The
    reason quotes ``ip`` and, where the kernel publishes its configuration,
    the ``CONFIG_<KIND>`` line.
    """
    probe = f"wbl-probe-{uuid.uuid4().hex[:8]}"
    ip("netns", "add", probe)
    try:
        ip("-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1")
        made = subprocess.run(
            ["ip", "-n", probe, "link", "add", "k0", "link", "p0", "type", kind],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        ip("netns", "del", probe)
    if made.returncode == 0:
        return None
    release = os.uname().release
    return (
        f"kernel {release} cannot create {kind} links: 'ip link add ... type {kind}' said "
        f"{made.stderr.strip()!r}; {_kernel_option(f'CONFIG_{kind.upper()}')}"
    )


def _kernel_option(option: str) -> str:
    """How the running kernel was configured for ``option``, as its config file says."""
    release = os.uname().release
    for path in (Path("/proc/config.gz"), Path(f"/boot/config-{release}")):
        try:
            raw = path.read_bytes()
        except OSError:
            continue
        text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode(errors="replace")
        for line in text.splitlines():
            if line.startswith((f"{option}=", f"# {option} ")):
                return f"{path}: {line.strip()}"
        return f"{path} does not mention {option}"
    return f"no kernel config published (/proc/config.gz, /boot/config-{release}) to check {option}"


def remove_stale_labs() -> list[str]:
    """Delete the netns of labs whose process is gone (killed before it could clean up)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    removed = []
    for line in listed.stdout.splitlines():
        name = line.split(" ", 1)[0]
        owner = name.split("-")[1] if name.startswith("wbl-") else ""
        if not owner.isdigit() or Path(f"/proc/{owner}").exists():
            continue
        done = subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        if done.returncode == 0:
            removed.append(name)
    return removed


def end_processes_in(netns: str) -> list[str]:
    """Kill what still runs in one of the lab's netns (a hung Multus or plugin); report it."""
    pids = ["ip", "netns", "pids", netns]
    listed = subprocess.run(pids, capture_output=True, text=True, check=False)
    problems = []
    for pid in listed.stdout.split():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            continue
        problems.append(f"process {pid} ({command.strip()}) was still running in {netns}")
    return problems
