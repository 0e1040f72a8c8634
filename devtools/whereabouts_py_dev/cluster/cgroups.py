"""A node's cgroup root under every cgroup v1 hierarchy: made before its kubelet, removed after.

Every node's kubelet gets its own ``cgroupRoot`` (``/wbc-<tag>-<node>``), so
its ``kubepods`` tree, and every container under it, is found and removed by
that one name. Removal kills what still runs there, then removes the
directories depth-first (a cgroup directory goes only when it has no
children and no processes).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

CGROUP_MOUNT = Path("/sys/fs/cgroup")


def hierarchies() -> list[Path]:
    """The mounted hierarchies (v1 controllers, named ones, the v2 ``unified`` one)."""
    return sorted(path for path in CGROUP_MOUNT.iterdir() if (path / "cgroup.procs").exists())


def create(root: str) -> None:
    """Create ``root`` (``/name``) in every hierarchy; cpuset gets its parent's CPUs and memory."""
    for hierarchy in hierarchies():
        directory = hierarchy / root.lstrip("/")
        directory.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            own = directory / name
            if own.exists() and not own.read_text().strip():
                own.write_text((hierarchy / name).read_text())


def _trees(root: str) -> list[Path]:
    return [
        hierarchy / root.lstrip("/")
        for hierarchy in hierarchies()
        if (hierarchy / root.lstrip("/")).is_dir()
    ]


def _directories(tree: Path) -> list[Path]:
    """``tree`` and every cgroup below it, deepest first.

    The runtime removes a container's cgroup as the container dies, maybe
    while we walk: os.walk skips a directory that vanished under it.
    """
    return [Path(path) for path, _, _ in os.walk(tree, topdown=False)]


def processes(root: str) -> set[int]:
    """Every process in ``root``'s trees."""
    found: set[int] = set()
    for tree in _trees(root):
        for directory in _directories(tree):
            with contextlib.suppress(OSError):
                found.update(int(pid) for pid in (directory / "cgroup.procs").read_text().split())
    return found


def kill_all(root: str, timeout_s: float = 10.0) -> None:
    """SIGKILL every process in ``root``'s trees until none is left (or time is up)."""
    deadline = time.monotonic() + timeout_s
    while (pids := processes(root)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def remove(root: str, timeout_s: float = 10.0) -> list[str]:
    """Kill what runs in ``root`` and rmdir its trees depth-first; report what stayed."""
    kill_all(root)
    deadline = time.monotonic() + timeout_s
    problems: list[str] = []
    while True:
        problems = []
        for tree in _trees(root):
            for directory in _directories(tree):
                try:
                    directory.rmdir()
                except FileNotFoundError:
                    pass
                except OSError as error:
                    problems.append(f"rmdir {directory}: {error.strerror}")
        if not problems or time.monotonic() > deadline:
            return problems
        kill_all(root, timeout_s=1.0)
        time.sleep(0.2)
