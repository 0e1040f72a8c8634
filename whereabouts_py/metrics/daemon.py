"""Prometheus metrics of the node daemon (names prefixed ``whereabouts_``).

Pool-level labels name the range's pool (the Go project's name for the whole
range, e.g. ``10.240.0.0-16``), not each 64-address block, to keep the
number of series bounded. ``docs/metrics.md`` explains each metric.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from whereabouts_py.metrics.common import GC_RELEASES, serve

REQUESTS = Counter(
    "whereabouts_shim_requests_total",
    "Requests the node daemon answered, by CNI verb and CNI error code (0 = success).",
    ["verb", "code"],
)
REQUEST_SECONDS = Histogram(
    "whereabouts_request_duration_seconds",
    "Time the node daemon took to answer one shim request, by CNI verb.",
    ["verb"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
ALLOCATIONS = Counter(
    "whereabouts_allocations_total",
    "Address allocations (one per range of an ADD), by network and result.",
    ["network", "result"],
)
RELEASES = Counter(
    "whereabouts_releases_total",
    "Attachments released by DEL or CNI GC, by network and result.",
    ["network", "result"],
)
POOL_WRITES = Counter(
    "whereabouts_pool_writes_total",
    "IPPool writes that succeeded, by pool.",
    ["pool"],
)
BATCH_SIZE = Histogram(
    "whereabouts_pool_write_batch_size",
    "Operations carried by one IPPool write.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
CAS_CONFLICTS = Counter(
    "whereabouts_cas_conflicts_total",
    "IPPool writes that lost a compare-and-swap race and were retried, by pool.",
    ["pool"],
)
CAS_EXHAUSTED = Counter(
    "whereabouts_cas_retries_exhausted_total",
    "Batches given up after every bounded retry lost its race (answered with code 11).",
    ["pool"],
)
LEASE_ACQUISITIONS = Counter(
    "whereabouts_lease_acquisitions_total",
    "Pool coordination Leases this node took, by pool.",
    ["pool"],
)
LEASE_LOSSES = Counter(
    "whereabouts_lease_losses_total",
    "Pool coordination Leases this node held but could not renew, by pool.",
    ["pool"],
)


def observe_request(verb: str, code: int, seconds: float) -> None:
    REQUESTS.labels(verb=verb, code=str(code)).inc()
    REQUEST_SECONDS.labels(verb=verb).observe(seconds)


__all__ = [
    "ALLOCATIONS",
    "BATCH_SIZE",
    "CAS_CONFLICTS",
    "CAS_EXHAUSTED",
    "GC_RELEASES",
    "LEASE_ACQUISITIONS",
    "LEASE_LOSSES",
    "POOL_WRITES",
    "RELEASES",
    "REQUESTS",
    "REQUEST_SECONDS",
    "observe_request",
    "serve",
]
