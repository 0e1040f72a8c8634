"""Metrics that both the node daemon and the reconciler export.

Defined once, so that a process (or a test) importing both metric modules
does not register the same name twice.
"""

from __future__ import annotations

from prometheus_client import Counter, start_http_server

GC_RELEASES = Counter(
    "whereabouts_gc_releases_total",
    "Addresses released by garbage collection, by reason: cni-gc (the CNI GC verb, daemon); "
    "pod_deleted, pod_replaced, pod_finished, pod_disrupted, not_in_network_status "
    "(reconciler).",
    ["reason"],
)


def serve(address: str) -> None:
    """Expose /metrics on HOST:PORT in a background thread."""
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0")
