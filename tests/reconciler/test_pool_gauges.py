"""Pool gauges are per range: a large range's blocks and the Go plugin's object are one series."""

from __future__ import annotations

from prometheus_client import REGISTRY

from whereabouts_py.core.allocator import Allocation
from whereabouts_py.metrics import reconciler as metrics
from whereabouts_py.reconciler.collector import GarbageCollector
from whereabouts_py.store.values import WHOLE_RANGE_ANNOTATION, PoolSnapshot


def ours(n: int) -> Allocation:
    return Allocation(f"c-{n}", f"ns/p-{n}", "net1", node="node-a")


def block(name: str, cidr: str, entries: dict[int, Allocation]) -> PoolSnapshot:
    annotations = {WHOLE_RANGE_ANNOTATION: "10.90.0.0/16"}
    return PoolSnapshot(name, cidr, entries, "1", metadata={"annotations": annotations})


def gauges() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in REGISTRY.collect():
        # The reconciler's per-range gauges (not the daemon's batch-size histogram).
        if family.type == "gauge" and family.name.startswith("whereabouts_pool_"):
            for sample in family.samples:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_a_range_stored_in_blocks_is_one_series_per_gauge() -> None:
    metrics.publish_pools([])  # what earlier in-process sweeps published
    assert gauges() == {}
    blocks = [
        block("blue-10.90.0.0-26", "10.90.0.0/26", {1: ours(1), 2: ours(2)}),
        block("blue-10.90.0.64-26", "10.90.0.64/26", {0: ours(3)}),
        block("blue-10.90.0.128-26", "10.90.0.128/26", {}),
    ]
    # The Go plugin's whole-range object: two mirrors of ours (with node) and one of its own.
    go_object = PoolSnapshot(
        "blue-10.90.0.0-16",
        "10.90.0.0/16",
        {1: ours(1), 64: ours(3), 300: Allocation("go-1", "ns/go", "net1")},
        "1",
    )
    small = PoolSnapshot("10.91.0.0-24", "10.91.0.0/24", {5: ours(5)}, "1")
    GarbageCollector._publish_pools([*blocks, go_object, small], {"10.91.0.0-24": 1})

    large = (("network", "blue"), ("pool", "blue-10.90.0.0-16"), ("range", "10.90.0.0/16"))
    single = (("network", ""), ("pool", "10.91.0.0-24"), ("range", "10.91.0.0/24"))
    assert gauges() == {
        ("whereabouts_pool_size", large): 65534.0,
        ("whereabouts_pool_allocated", large): 4.0,  # 3 in blocks + the Go plugin's own
        ("whereabouts_pool_objects", large): 4.0,
        ("whereabouts_pool_size", single): 254.0,
        ("whereabouts_pool_allocated", single): 0.0,  # its one entry was just released
        ("whereabouts_pool_objects", single): 1.0,
        ("whereabouts_pool_claimed", large): 0.0,
        ("whereabouts_pool_claimed", single): 0.0,
    }

    # Ranges that are gone lose their series; nothing is left for an empty namespace.
    GarbageCollector._publish_pools([small], {})
    assert {labels for _name, labels in gauges()} == {single}
    metrics.publish_pools([])
    assert gauges() == {}
