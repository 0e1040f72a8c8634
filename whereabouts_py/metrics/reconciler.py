"""Prometheus metrics of the reconciler (names prefixed ``whereabouts_``).

Pool gauges describe ranges as stored, one series each however many IPPool
objects (blocks) store it. The reconciler does not read NADs, so
``whereabouts_pool_size`` counts the addresses of the range that can be
handed out, all but its network and last address, without the NAD's
exclusions or gateway.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from whereabouts_py.core.codec import pool_name
from whereabouts_py.metrics.common import GC_RELEASES, serve

GC_FAILURES = Counter(
    "whereabouts_gc_failures_total",
    "Releases or repairs the reconciler attempted and could not complete (retried later).",
    ["action"],
)
RESERVATION_REPAIRS = Counter(
    "whereabouts_reservation_repairs_total",
    "OverlappingRangeIPReservations repaired by the sweep: deleted (no pool entry held the "
    "address) or created (a pool entry had none); mirrored: block entries copied into the "
    "Go plugin's whole-range IPPool.",
    ["action"],
)
CONFLICTS = Gauge(
    "whereabouts_address_conflicts",
    "Pool entries of live pods whose address another attachment holds cluster-wide, as of "
    "the last sweep. Never released automatically; any value above 0 needs an operator.",
)
SWEEP_SECONDS = Histogram(
    "whereabouts_reconciler_sweep_duration_seconds",
    "Time one full sweep of pools, reservations and pods took.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
LEADER = Gauge(
    "whereabouts_reconciler_leader",
    "1 while this reconciler replica holds the leader Lease and acts, else 0.",
)
LEASE_ACQUISITIONS = Counter(
    "whereabouts_reconciler_lease_acquisitions_total",
    "Times this replica took the reconciler's leader Lease.",
)
LEASE_LOSSES = Counter(
    "whereabouts_reconciler_lease_losses_total",
    "Times this replica stopped leading (Lease taken over, or not renewed in time).",
)
BLOCKS_DELETED = Counter(
    "whereabouts_empty_blocks_deleted_total",
    "Empty, unclaimed 64-address block IPPools of large ranges deleted by the sweep "
    "(with their Leases), so that blocks do not pile up.",
)
POOL_LABELS = ["pool", "network", "range"]
POOL_SIZE = Gauge(
    "whereabouts_pool_size",
    "Addresses of the range that can be handed out (its network and last address excluded; "
    "NAD exclusions are not known here), one series per range as configured.",
    POOL_LABELS,
)
POOL_ALLOCATED = Gauge(
    "whereabouts_pool_allocated",
    "Held addresses of the range as of the last sweep, over all its IPPool objects (an "
    "entry of ours mirrored into the Go plugin's whole-range IPPool counts once).",
    POOL_LABELS,
)
POOL_CLAIMED = Gauge(
    "whereabouts_pool_claimed",
    "Held addresses of the range that an IPAMClaim owns (persistent addresses of virtual "
    "machines: kept across their pods until the claim is deleted), as of the last sweep.",
    POOL_LABELS,
)
POOL_OBJECTS = Gauge(
    "whereabouts_pool_objects",
    "IPPool objects that store the range: 1, or its 64-address blocks (and the Go plugin's "
    "whole-range object, if any).",
    POOL_LABELS,
)


@dataclass(frozen=True)
class PoolUsage:
    """One IPPool object's numbers; ``publish_pools`` sums them per range.

    ``cidr`` is the range as configured (for a block: the whole range of its
    annotation), ``size`` that range's assignable addresses; ``block`` says
    whether the object is one of its 64-address blocks; ``without_node``
    counts entries with no ``node`` (the Go plugin's own, never our mirrors).
    """

    pool: str
    network: str
    cidr: str
    size: int
    allocated: int
    block: bool = False
    without_node: int = 0
    claimed: int = 0  # entries an IPAMClaim owns


_published_pools: set[tuple[str, str, str]] = set()


def publish_pools(usages: Iterable[PoolUsage]) -> None:
    """Set the per-range gauges from ``usages`` and drop ranges that no longer exist.

    Where a range has blocks, its other object is the Go plugin's whole-range
    IPPool, whose entries with a ``node`` are mirrors of block entries: only
    its own entries are added to the blocks'.
    """
    ranges: dict[tuple[str, str], list[PoolUsage]] = {}
    for usage in usages:
        ranges.setdefault((usage.network, usage.cidr), []).append(usage)
    current: set[tuple[str, str, str]] = set()
    for (network, cidr), objects in ranges.items():
        blocks = [usage for usage in objects if usage.block]
        whole = [usage for usage in objects if not usage.block]
        if blocks:
            allocated = sum(u.allocated for u in blocks) + sum(u.without_node for u in whole)
            claimed = sum(u.claimed for u in blocks)  # the whole-range object only mirrors
        else:
            allocated = sum(u.allocated for u in whole)
            claimed = sum(u.claimed for u in whole)
        labels = (pool_name(cidr, network or None), network, cidr)
        current.add(labels)
        POOL_SIZE.labels(*labels).set(max(u.size for u in objects))
        POOL_ALLOCATED.labels(*labels).set(allocated)
        POOL_OBJECTS.labels(*labels).set(len(objects))
        POOL_CLAIMED.labels(*labels).set(claimed)
    for labels in _published_pools - current:
        for gauge in (POOL_SIZE, POOL_ALLOCATED, POOL_OBJECTS, POOL_CLAIMED):
            gauge.remove(*labels)
    _published_pools.clear()
    _published_pools.update(current)


def count_release(reason: str, count: int = 1) -> None:
    GC_RELEASES.labels(reason=reason).inc(count)


def count_failure(action: str) -> None:
    GC_FAILURES.labels(action=action).inc()


def count_repair(action: str) -> None:
    RESERVATION_REPAIRS.labels(action=action).inc()


def set_leader(leading: bool) -> None:
    LEADER.set(1 if leading else 0)


__all__ = [
    "BLOCKS_DELETED",
    "CONFLICTS",
    "GC_FAILURES",
    "GC_RELEASES",
    "LEADER",
    "LEASE_ACQUISITIONS",
    "LEASE_LOSSES",
    "POOL_ALLOCATED",
    "POOL_OBJECTS",
    "POOL_SIZE",
    "RESERVATION_REPAIRS",
    "SWEEP_SECONDS",
    "PoolUsage",
    "count_failure",
    "count_release",
    "count_repair",
    "publish_pools",
    "serve",
    "set_leader",
]
