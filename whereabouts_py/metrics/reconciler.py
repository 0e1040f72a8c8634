"""Prometheus metrics of the reconciler (names prefixed ``whereabouts_``).

Pool gauges describe objects, not NAD configurations: the reconciler does not
read NADs, so ``whereabouts_pool_size`` counts the addresses of the pool's
``spec.range`` that can be handed out, all but the range's network and last
address (for a block of a large range: the whole range's, when they fall in
the block), without the NAD's exclusions or gateway.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

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
POOL_SIZE = Gauge(
    "whereabouts_pool_size",
    "Addresses of the IPPool's range that can be handed out (the range's network and last "
    "address excluded; NAD exclusions are not known here).",
    ["pool", "network", "range"],
)
POOL_ALLOCATED = Gauge(
    "whereabouts_pool_allocated",
    "Entries (held addresses) in the IPPool as of the last sweep.",
    ["pool", "network", "range"],
)
POOL_FREE = Gauge(
    "whereabouts_pool_free",
    "whereabouts_pool_size minus whereabouts_pool_allocated, never below 0.",
    ["pool", "network", "range"],
)


@dataclass(frozen=True)
class PoolUsage:
    """One IPPool's numbers for the pool gauges."""

    pool: str
    network: str
    cidr: str
    size: int
    allocated: int


_published_pools: set[tuple[str, str, str]] = set()


def publish_pools(usages: Iterable[PoolUsage]) -> None:
    """Set the pool gauges to ``usages`` and drop pools that no longer exist."""
    current: set[tuple[str, str, str]] = set()
    for usage in usages:
        labels = (usage.pool, usage.network, usage.cidr)
        current.add(labels)
        POOL_SIZE.labels(*labels).set(usage.size)
        POOL_ALLOCATED.labels(*labels).set(usage.allocated)
        POOL_FREE.labels(*labels).set(max(0, usage.size - usage.allocated))
    for labels in _published_pools - current:
        for gauge in (POOL_SIZE, POOL_ALLOCATED, POOL_FREE):
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
    "CONFLICTS",
    "GC_FAILURES",
    "GC_RELEASES",
    "LEADER",
    "LEASE_ACQUISITIONS",
    "LEASE_LOSSES",
    "POOL_ALLOCATED",
    "POOL_FREE",
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
