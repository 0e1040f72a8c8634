"""A pool writer's failures reach every caller at once, and never kill it.

Requests that join a batch while the writer waits for its Lease fail with the
batch's own error (e.g. the API went away), promptly, instead of sitting out
their timeout; and a Lease another node took meanwhile (409 on giving it back)
does not end the writer's thread.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from whereabouts_py.core.allocator import Allocation
from whereabouts_py.daemon.batching import PoolWriter, lease_name_for
from whereabouts_py.errors import ApiUnavailableError
from whereabouts_py.store.kube import KubeStore, connect
from whereabouts_py_dev.controlplane import ControlPlane

OWNER = Allocation("c1", "default/p", "net1", "node-a")


def put(offset: int) -> Any:
    def operation(allocations: dict[int, Allocation]) -> tuple[dict[int, Allocation], int]:
        return {**allocations, offset: OWNER}, offset

    return operation


def test_requests_joined_while_waiting_for_the_lease_fail_promptly_with_the_api_error(
    control_plane: ControlPlane, namespace: str
) -> None:
    store = KubeStore(connect(str(control_plane.kubeconfig)), namespace)
    writer = PoolWriter(store, "10.82.0.0-26", "10.82.0.0/26", "node-a", coordination="always")
    # Another node holds the block's Lease: our worker waits (up to 3 s) for it.
    store.write_lease(None, lease_name_for(writer.name), "node-b", 30.0)

    def down(name: str, cidr: str) -> Any:
        raise ApiUnavailableError(f"reading IPPool {name}: Kubernetes API not reachable")

    store.get_pool = down  # type: ignore[method-assign]
    results: dict[str, tuple[float, BaseException | None]] = {}
    started = time.monotonic()

    def call(label: str, offset: int) -> None:
        try:
            writer.run(put(offset), timeout_s=12.0)
            results[label] = (time.monotonic() - started, None)
        except BaseException as error:
            results[label] = (time.monotonic() - started, error)

    first = threading.Thread(target=call, args=("first", 1))
    first.start()
    time.sleep(0.5)  # the worker is waiting for the Lease now
    second = threading.Thread(target=call, args=("second", 2))
    second.start()
    first.join(20)
    second.join(20)
    t1, e1 = results["first"]
    t2, e2 = results["second"]
    assert isinstance(e1, ApiUnavailableError)
    assert t2 < t1 + 2.0 and isinstance(e2, ApiUnavailableError), (
        f"first failed after {t1:.1f}s with {e1!r}; the request that joined the batch "
        f"waited {t2:.1f}s and got {e2!r}"
    )


def test_giving_back_a_lease_another_node_took_does_not_kill_the_worker(
    control_plane: ControlPlane, namespace: str
) -> None:
    store = KubeStore(connect(str(control_plane.kubeconfig)), namespace)
    writer = PoolWriter(store, "10.83.0.0-26", "10.83.0.0/26", "node-a", coordination="always")
    crashes: list[BaseException] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: crashes.append(args.exc_value)  # type: ignore[assignment,misc]
    try:

        def slow_write(allocations: dict[int, Allocation]) -> tuple[dict[int, Allocation], int]:
            # Our write is slow; our Lease runs out and node-b takes it meanwhile.
            current = store.get_lease(writer.lease_name)
            store.write_lease(current, writer.lease_name, "node-b", 30.0)
            return {**allocations, 1: OWNER}, 1

        assert writer.run(slow_write, timeout_s=10.0) == 1
        deadline = time.monotonic() + 5
        while writer._worker_running and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        threading.excepthook = previous
    assert not crashes, f"pool worker thread died: {crashes[0]!r}"
