"""Writers of one shared pool take turns named in the pool (daemon.batching, core.turns).

On the in-memory store: several nodes' writers of one IPPool, many requests at
once. Correctness (no address twice) never rests on the turns; what they buy
is few lost compare-and-swap races, and a ring that empties once the nodes have
nothing left to write.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from whereabouts_py.core import turns
from whereabouts_py.core.allocator import Allocation
from whereabouts_py.daemon.batching import PoolWriter
from whereabouts_py.errors import ConflictError, ForbiddenError
from whereabouts_py.store.memory import MemoryStore
from whereabouts_py.store.values import PoolSnapshot

POOL, CIDR = "10.5.0.0-24", "10.5.0.0/24"


class CountingStore(MemoryStore):
    """Counts pool writes and the ones answered 'conflict'."""

    def __init__(self) -> None:
        super().__init__("pools")
        self.writes = 0
        self.conflicts = 0
        self._count_lock = threading.Lock()

    def write_pool(
        self, snapshot: PoolSnapshot, allocations: Mapping[int, Allocation], **kw: Any
    ) -> PoolSnapshot:
        with self._count_lock:
            self.writes += 1
        try:
            return super().write_pool(snapshot, allocations, **kw)
        except ConflictError:
            with self._count_lock:
                self.conflicts += 1
            raise


def assign(key: int) -> Any:
    def operation(allocations: dict[int, Allocation]) -> tuple[dict[int, Allocation], int]:
        free = next(offset for offset in range(1, 255) if offset not in allocations)
        return {**allocations, free: Allocation(f"c-{key}", f"ns/p-{key}", "net1")}, free

    return operation


def turn_of(store: MemoryStore) -> turns.Turn:
    annotations = store.get_pool(POOL, CIDR).metadata.get("annotations") or {}
    return turns.parse(annotations.get(turns.TURN_ANNOTATION))


def writers(store: MemoryStore, count: int) -> list[PoolWriter]:
    return [
        PoolWriter(store, POOL, CIDR, f"node-{i}", coordination="always", turns=True)
        for i in range(count)
    ]


def test_nodes_take_turns_without_lost_races_and_the_ring_empties() -> None:
    store = CountingStore()
    nodes = writers(store, 5)
    requests = 120
    with ThreadPoolExecutor(max_workers=25) as pool:
        offsets = list(pool.map(lambda i: nodes[i % 5].run(assign(i)), range(requests)))
    assert len(set(offsets)) == requests
    stored = store.get_pool(POOL, CIDR).allocations
    assert {a.container_id for a in stored.values()} == {f"c-{i}" for i in range(requests)}
    # Batches: fewer writes than requests. Lost races: only a node's first
    # write, out of turn, may lose (it joins the ring by it).
    assert store.writes < requests
    assert store.conflicts <= 2 * len(nodes), (store.writes, store.conflicts)
    # Asking for a turn is one patch of the node's own annotation: never read
    # first, never a compare-and-swap (the Lease of a pool taken in turns is
    # not held), at most a few per node in this burst.
    assert store.calls["get_lease"] == 0
    assert store.calls["write_lease"] == 0
    assert store.calls["note_lease"] <= 3 * len(nodes), store.calls["note_lease"]
    # With nothing left to write, each member passes its turn on and leaves.
    deadline = time.monotonic() + 10.0
    while turn_of(store).ring and time.monotonic() < deadline:
        time.sleep(0.05)
    assert turn_of(store).ring == ()


def test_a_turn_named_for_a_silent_node_lapses() -> None:
    store = CountingStore()
    empty = store.get_pool(POOL, CIDR)
    until = int(time.time() * 1000) + 400
    store.write_pool(
        empty,
        {},
        marks={
            turns.TURN_ANNOTATION: turns.Turn("node-gone", until, ("node-0", "node-gone")).encode()
        },
    )
    (node,) = writers(store, 1)
    started = time.monotonic()
    assert node.run(assign(1)) == 1
    waited = time.monotonic() - started
    assert 0.3 <= waited < 3.0, waited
    assert "node-gone" not in turn_of(store).ring


def test_lost_races_injected_at_any_write_are_redone() -> None:
    store = CountingStore()
    nodes = writers(store, 2)
    store.fail("write_pool", *(ConflictError("injected", "test") for _ in range(3)))
    with ThreadPoolExecutor(max_workers=6) as pool:
        offsets = list(pool.map(lambda i: nodes[i % 2].run(assign(i)), range(12)))
    assert sorted(offsets) == list(range(1, 13))
    assert len(store.get_pool(POOL, CIDR).allocations) == 12


def test_without_the_right_to_watch_the_writers_look_at_the_pool() -> None:
    store = CountingStore()
    store.fail("watch_pool", *(ForbiddenError("no watch", "test") for _ in range(5)))
    nodes = writers(store, 3)
    with ThreadPoolExecutor(max_workers=6) as pool:
        offsets = list(pool.map(lambda i: nodes[i % 3].run(assign(i)), range(30)))
    assert sorted(offsets) == list(range(1, 31))
    assert store.calls["watch_pool"] <= 3  # each gave up watching after its refusal
    assert store.calls["get_pool"] > 0


def test_a_newcomer_that_cannot_ask_for_a_turn_writes_out_of_turn() -> None:
    store = CountingStore()
    until = int(time.time() * 1000) + 30_000
    store.write_pool(
        store.get_pool(POOL, CIDR),
        {},
        marks={turns.TURN_ANNOTATION: turns.Turn("node-x", until, ("node-x",)).encode()},
    )
    # It asks in the Lease by a patch (note_lease), refused here.
    store.fail("note_lease", ForbiddenError("no Lease rights", "test"))
    (node,) = writers(store, 1)
    started = time.monotonic()
    assert node.run(assign(1)) == 1
    assert time.monotonic() - started < turns.TURN_GRACE_MS / 1000
    assert turn_of(store).ring == ("node-0", "node-x")


def test_a_member_keeps_taking_its_turn_after_its_window_of_coordination() -> None:
    store = CountingStore()
    until = int(time.time() * 1000) + 1500
    store.write_pool(
        store.get_pool(POOL, CIDR),
        {},
        marks={turns.TURN_ANNOTATION: turns.Turn("node-x", until, ("node-0", "node-x")).encode()},
    )
    node = PoolWriter(store, POOL, CIDR, "node-0", turns=True)  # "auto": no race lost yet
    node.read()  # what it last saw of the pool: it is in the ring, node-x's turn
    started = time.monotonic()
    assert node.run(assign(1)) == 1
    assert time.monotonic() - started >= 1.0  # it waited for node-x's turn to lapse
    assert store.conflicts == 0


def test_a_writer_looks_up_its_own_entries_in_its_copy_until_someone_else_writes() -> None:
    store = CountingStore()
    mine, theirs = writers(store, 2)
    assert mine.run(assign(1)) == 1
    deadline = time.monotonic() + 5.0
    while not mine._pool_watch.latest()[1] and time.monotonic() < deadline:
        time.sleep(0.01)
    reads = store.calls["get_pool"]
    copy = mine.current()
    assert store.calls["get_pool"] == reads  # its own write is the latest: no read
    assert copy.allocations[1].container_id == "c-1"
    # Another node writes: the watch drops the copy, and the next look reads.
    assert theirs.run(assign(2)) == 2
    deadline = time.monotonic() + 5.0
    while mine._snapshot is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    fresh = mine.current()
    assert store.calls["get_pool"] > reads
    assert {a.container_id for a in fresh.allocations.values()} == {"c-1", "c-2"}
