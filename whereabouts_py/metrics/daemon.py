"""Prometheus metrics of the node daemon (names prefixed ``whereabouts_``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

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
CAS_CONFLICTS = Counter(
    "whereabouts_cas_conflicts_total",
    "IPPool writes that lost a compare-and-swap race and were retried.",
    ["pool"],
)


def observe_request(verb: str, code: int, seconds: float) -> None:
    REQUESTS.labels(verb=verb, code=str(code)).inc()
    REQUEST_SECONDS.labels(verb=verb).observe(seconds)


def count_conflict(pool: str) -> None:
    CAS_CONFLICTS.labels(pool=pool).inc()


def serve(address: str) -> None:
    """Expose /metrics on HOST:PORT in a background thread."""
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0")
