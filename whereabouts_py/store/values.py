"""The plain values the store hands out, and the rules every store applies.

``whereabouts_py.store.kube`` (the Kubernetes API) and
``whereabouts_py.store.memory`` (its in-memory twin) both speak in these
values, so nothing above the store sees an API type. Object names are
checked here, before any request: a name Kubernetes would refuse never
reaches a store.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from whereabouts_py.cni.names import (
    LABEL_RULE,
    SUBDOMAIN_RULE,
    is_namespace_name,
    is_object_name,
)
from whereabouts_py.core.allocator import Allocation
from whereabouts_py.core.poolops import pool_size
from whereabouts_py.errors import InvalidNameError, shown

# Metadata an update must carry over: a PUT replaces the whole object.
_KEPT_METADATA = ("labels", "annotations", "finalizers", "ownerReferences")
# On a block of a large range: the whole range it belongs to (core.shards).
WHOLE_RANGE_ANNOTATION = "whereabouts-py.io/range"


def kept_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {key: metadata[key] for key in _KEPT_METADATA if metadata.get(key)}


@dataclass(frozen=True)
class PoolSnapshot:
    """One IPPool as read: ``resource_version`` is None when it does not exist yet.

    ``metadata`` holds what an update must carry over (labels, annotations,
    finalizers, owner references), as read.
    """

    name: str
    cidr: str
    allocations: Mapping[int, Allocation]
    resource_version: str | None
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)
    status: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def status_current(self) -> bool:
        """Whether ``status.allocated`` matches the entries (the Go project drops status)."""
        return self.status.get("allocated") == len(self.allocations)


@dataclass(frozen=True)
class PoolMark:
    """An IPPool's metadata as a watch of it reports: which version, and its annotations."""

    name: str
    resource_version: str
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reservation:
    """One OverlappingRangeIPReservation (a cluster-wide claim on one address)."""

    name: str
    holder: Allocation
    resource_version: str
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class LeaseRecord:
    """A coordination.k8s.io/v1 Lease as read."""

    name: str
    holder: str
    renewed: dt.datetime | None
    duration_s: float
    resource_version: str
    # Its annotations (kept by every write; the writers of a pool taken in turns
    # ask for a turn there).
    notes: Mapping[str, str] = field(default_factory=dict, compare=False)

    def held_by_other(self, identity: str, now: dt.datetime) -> bool:
        if not self.holder or self.holder == identity or self.renewed is None:
            return False
        return now < self.renewed + dt.timedelta(seconds=self.duration_s)


@dataclass(frozen=True)
class ObjectRef:
    """The object a Kubernetes Event is about (its ``involvedObject``)."""

    kind: str
    api_version: str
    namespace: str
    name: str
    uid: str | None = None


def checked_name(kind: str, name: str) -> str:
    """``name`` if Kubernetes accepts it for an object; InvalidNameError before any request."""
    if not is_object_name(name):
        raise InvalidNameError(
            f"refusing to send a request for {kind} {shown(name)}: not a valid object name",
            f"object names are {SUBDOMAIN_RULE}",
        )
    return name


def checked_namespace(name: str) -> str:
    if not is_namespace_name(name):
        raise InvalidNameError(
            f"refusing to send a request in namespace {shown(name)}: not a valid namespace name",
            f"namespace names are {LABEL_RULE}",
        )
    return name


def pool_lease_name(pool: str) -> str:
    """The coordination Lease of an IPPool, as the node daemons name it."""
    return f"whereabouts-py-pool-{pool}"[:253]


def pool_status(
    snapshot: PoolSnapshot,
    allocations: Mapping[int, Allocation],
    *,
    size: int | None = None,
    network: str | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The counts ``kubectl get ippools`` shows; fields the Go project ignores.

    A block of a large range also names the range it belongs to (``blockOf``,
    from its annotation, or ``annotations`` when it is being created), so that
    its row reads ``fd60::/122`` block of ``fd60::/64``.
    """
    previous = snapshot.status
    whole = (annotations or {}).get(WHOLE_RANGE_ANNOTATION) or (
        snapshot.metadata.get("annotations") or {}
    ).get(WHOLE_RANGE_ANNOTATION)
    known_size = previous.get("size")
    if size is None:
        size = known_size if isinstance(known_size, int) else pool_size(snapshot.cidr, whole)
    allocated = len(allocations)
    status: dict[str, Any] = {
        "size": size,
        "allocated": allocated,
        "free": max(size - allocated, 0),
        "usedPercent": min(100, round(100 * allocated / size)) if size else 100,
    }
    network = network if network is not None else previous.get("network")
    if network:
        status["network"] = network
    if whole:
        status["blockOf"] = str(whole)
    return status
