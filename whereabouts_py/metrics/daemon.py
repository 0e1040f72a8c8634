"""Prometheus metrics of the node daemon (names prefixed ``whereabouts_``).

Label values are snake_case. Pool-level labels name the range's pool (the Go
project's name for the whole range, e.g. ``10.240.0.0-16``), not each
64-address block, to keep the number of series bounded. ``docs/metrics.md``
explains each metric.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from whereabouts_py import errors
from whereabouts_py.cni.wire import VERBS
from whereabouts_py.metrics.common import GC_RELEASES, serve

# The CNI error codes (docs/cni-errors.md) as the ``result`` label says them.
RESULT_OF_CODE = {
    0: "success",
    errors.CODE_INCOMPATIBLE_VERSION: "incompatible_version",
    errors.CODE_UNSUPPORTED_FIELD: "unsupported_field",
    errors.CODE_CONTAINER_UNKNOWN: "container_unknown",
    errors.CODE_INVALID_ENVIRONMENT: "invalid_environment",
    errors.CODE_IO_FAILURE: "io_failure",
    errors.CODE_DECODE_FAILURE: "decode_failure",
    errors.CODE_INVALID_CONFIG: "invalid_config",
    errors.CODE_TRY_AGAIN: "try_again",
    errors.CODE_NOT_AVAILABLE: "not_available",
    errors.CODE_NOT_AVAILABLE_LIMITED: "not_available_limited",
    errors.CODE_POOL_EXHAUSTED: "pool_exhausted",
    errors.CODE_ADDRESS_TAKEN: "address_taken",
    errors.CODE_ADDRESS_OUT_OF_RANGE: "address_out_of_range",
    errors.CODE_ADDRESS_NOT_CONFIGURED: "address_not_configured",
    errors.CODE_GC_INCOMPLETE: "gc_incomplete",
    errors.CODE_INTERNAL: "internal",
}
REQUESTS = Histogram(
    "whereabouts_request_duration_seconds",
    "Time the node daemon took to answer one shim request, by CNI verb and result "
    "(success, or the CNI error, e.g. pool_exhausted); _count is the number of requests.",
    ["verb", "result"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
ALLOCATIONS = Counter(
    "whereabouts_allocations_total",
    "Address allocations (one per range of an ADD), by network and result: allocated, or "
    "the CNI error of a failed ADD.",
    ["network", "result"],
)
RELEASES = Counter(
    "whereabouts_releases_total",
    "Attachments released by DEL, by network and result: released, nothing_held, or the CNI error.",
    ["network", "result"],
)
BATCH_SIZE = Histogram(
    "whereabouts_pool_write_batch_size",
    "Operations carried by one successful IPPool write, by pool; _count is the number of writes.",
    ["pool"],
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


def result_name(code: int) -> str:
    """The ``result`` label of a CNI code: its name in snake_case (``error_<code>`` if unknown)."""
    return RESULT_OF_CODE.get(code, f"error_{code}")


def result_of(error: BaseException) -> str:
    """The ``result`` label of a failed operation."""
    code = error.code if isinstance(error, errors.WhereaboutsError) else errors.CODE_INTERNAL
    return result_name(code)


def observe_request(verb: str, code: int, seconds: float) -> None:
    """One answered request; a verb that is not one of CNI's is counted as ``unknown``."""
    label = verb if verb in VERBS else "unknown"
    REQUESTS.labels(verb=label, result=result_name(code)).observe(seconds)


__all__ = [
    "ALLOCATIONS",
    "BATCH_SIZE",
    "CAS_CONFLICTS",
    "CAS_EXHAUSTED",
    "GC_RELEASES",
    "LEASE_ACQUISITIONS",
    "LEASE_LOSSES",
    "RELEASES",
    "REQUESTS",
    "RESULT_OF_CODE",
    "observe_request",
    "result_name",
    "result_of",
    "serve",
]
