"""The pool watch and turn marks: the same behaviour from both stores."""

from __future__ import annotations

import threading

from tests.store import test_store_contract as contract
from tests.store.test_store_contract import A, B, Backend
from whereabouts_py.store.values import PoolMark

backend = contract.backend  # the same two stores as the contract (memory, kube)

TURN = "whereabouts-py.io/turn"


def test_marks_are_set_on_create_and_replace_and_kept_otherwise(backend: Backend) -> None:
    store = backend.store
    made = store.write_pool(
        store.get_pool("10.7.0.0-29", "10.7.0.0/29"),
        {1: A},
        annotations={"example.org/why": "test"},
        marks={TURN: "next=node-b;until=5;ring=node-a,node-b"},
    )
    assert made.metadata["annotations"] == {
        "example.org/why": "test",
        TURN: "next=node-b;until=5;ring=node-a,node-b",
    }
    moved = store.write_pool(made, {1: A, 2: B}, marks={TURN: "next=;until=0;ring=node-b"})
    plain = store.write_pool(moved, {2: B})  # no marks: what is there stays
    stored = store.get_pool("10.7.0.0-29", "10.7.0.0/29")
    assert stored.metadata["annotations"] == {
        "example.org/why": "test",
        TURN: "next=;until=0;ring=node-b",
    }
    assert stored.resource_version == plain.resource_version


def test_a_pool_watch_gives_the_metadata_then_each_change(backend: Backend) -> None:
    store = backend.store
    first = store.write_pool(
        store.get_pool("10.8.0.0-29", "10.8.0.0/29"), {1: A}, annotations={"example.org/a": "1"}
    )
    seen: list[PoolMark | None] = []
    started = threading.Event()

    def follow() -> None:
        for snapshot in store.watch_pool("10.8.0.0-29", timeout_s=3.0):
            seen.append(snapshot)
            started.set()
            if len(seen) == 3:
                return

    watcher = threading.Thread(target=follow)
    watcher.start()
    assert started.wait(10.0)
    second = store.write_pool(first, {1: A, 2: B}, marks={TURN: "next=node-a;until=9;ring=node-a"})
    assert store.delete_pool(second)
    watcher.join(15.0)
    assert not watcher.is_alive()
    assert seen[0] == PoolMark("10.8.0.0-29", str(first.resource_version), {"example.org/a": "1"})
    assert seen[1] == PoolMark(
        "10.8.0.0-29",
        str(second.resource_version),
        {"example.org/a": "1", TURN: "next=node-a;until=9;ring=node-a"},
    )
    assert seen[2] is None  # deleted


def test_a_pool_watch_ends_after_its_timeout(backend: Backend) -> None:
    store = backend.store
    made = store.write_pool(store.get_pool("10.9.0.0-29", "10.9.0.0/29"), {2: B})
    events = list(store.watch_pool("10.9.0.0-29", timeout_s=1.0))
    assert [e.resource_version if e else None for e in events] == [made.resource_version]
