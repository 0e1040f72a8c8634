"""Metrics that both the node daemon and the reconciler export.

Defined once, so that a process (or a test) importing both metric modules
does not register the same name twice.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter

from whereabouts_py.metrics.health import Check, HealthServer

GC_RELEASES = Counter(
    "whereabouts_gc_releases_total",
    "Addresses released by garbage collection, by reason: cni_gc (the CNI GC verb, daemon); "
    "pod_deleted, pod_replaced, pod_finished, pod_disrupted, not_in_network_status "
    "(reconciler).",
    ["reason"],
)


def serve(
    address: str,
    *,
    live: Mapping[str, Check] | None = None,
    ready: Mapping[str, Check] | None = None,
) -> HealthServer:
    """Expose /metrics, /healthz (``live``) and /readyz (``live`` and ``ready``) on HOST:PORT."""
    return HealthServer(address, live=live, ready=ready)
