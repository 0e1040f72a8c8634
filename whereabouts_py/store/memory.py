"""``MemoryStore``: the ``Store`` protocol in memory, for fast deterministic tests.

It keeps the Kubernetes API's semantics that the logic above relies on
(compare-and-swap on one resourceVersion counter for every object,
AlreadyExists, NotFound as None, name rules, Lease times, status counts
written with every pool write) and lets a test inject failures: ``fail``
queues errors that the next calls of one method raise, before they touch
anything, so that a conflict or an outage can be placed at any step of an
ADD, a DEL or a sweep. ``put_pod`` and ``delete_pod`` stand for the pods
the kubelet and the apiserver would report. It is held to ``KubeStore``
by tests/store/test_store_contract.py.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from whereabouts_py.core.allocator import Allocation
from whereabouts_py.core.claims import ClaimState, allocated_conditions
from whereabouts_py.core.codec import (
    decode_allocations,
    decode_reservation,
    encode_allocations,
    encode_reservation,
)
from whereabouts_py.core.ownership import PodState
from whereabouts_py.errors import AlreadyExistsError, ConflictError, NotFoundError, WhereaboutsError
from whereabouts_py.store.values import (
    LeaseRecord,
    ObjectRef,
    PoolMark,
    PoolSnapshot,
    Reservation,
    checked_name,
    checked_namespace,
    pool_status,
)

if TYPE_CHECKING:
    from whereabouts_py.store.base import Store
    from whereabouts_py.store.kube import KubeStore

SERVER_VERSION = "memory"


T = TypeVar("T")


@dataclass(frozen=True)
class RecordedEvent:
    about: ObjectRef
    reason: str
    message: str
    warning: bool
    component: str


class MemoryStore:
    """One namespace's pools, reservations and Leases, and the cluster's pods, in memory."""

    def __init__(
        self,
        namespace: str = "kube-system",
        *,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.namespace = checked_namespace(namespace)
        self._clock = clock
        self._lock = threading.Lock()
        self._pool_log: _ChangeLog[PoolSnapshot] = _ChangeLog()
        self._version = 0
        self._pools: dict[str, PoolSnapshot] = {}
        self._reservations: dict[str, Reservation] = {}
        self._leases: dict[str, LeaseRecord] = {}
        # Each Lease's changes, numbered, for watch_lease (as many as a watch may lag).
        self._lease_log: _ChangeLog[LeaseRecord] = _ChangeLog()
        self._pods: dict[tuple[str, str], PodState] = {}
        self._claims: dict[tuple[str, str], ClaimState] = {}
        self._faults: dict[str, deque[WhereaboutsError]] = defaultdict(deque)
        self.events: list[RecordedEvent] = []
        # How many times each method was called: what a test may assert on.
        self.calls: dict[str, int] = defaultdict(int)

    # --- for tests ----------------------------------------------------------------
    def fail(self, method: str, *errors: WhereaboutsError) -> None:
        """The next calls of ``method`` raise ``errors``, one each, before doing anything."""
        if not callable(getattr(self, method, None)) or method.startswith("_"):
            raise ValueError(f"MemoryStore has no method {method!r}")
        self._faults[method].extend(errors)

    def put_pod(self, pod: PodState) -> None:
        self._pods[(pod.namespace, pod.name)] = pod

    def delete_pod(self, namespace: str, name: str) -> None:
        self._pods.pop((namespace, name), None)

    def put_ipam_claim(self, claim: ClaimState) -> ClaimState:
        """Create or replace an IPAMClaim (as KubeVirt would); returns it as stored."""
        with self._lock:
            stored = replace(claim, resource_version=self._next_version())
            self._claims[(claim.namespace, claim.name)] = stored
            return stored

    def delete_ipam_claim(self, namespace: str, name: str) -> None:
        self._claims.pop((namespace, name), None)

    def _enter(self, method: str) -> None:
        self.calls[method] += 1
        queued = self._faults.get(method)
        if queued:
            raise queued.popleft()

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    # --- reachability -----------------------------------------------------------
    def ping(self) -> str:
        self._enter("ping")
        return SERVER_VERSION

    # --- IPPools ------------------------------------------------------------------
    def get_pool(self, name: str, cidr: str) -> PoolSnapshot:
        checked_name("IPPool", name)
        self._enter("get_pool")
        with self._lock:
            return self._pools.get(name) or PoolSnapshot(name, cidr, {}, None)

    def list_pools(self) -> list[PoolSnapshot]:
        self._enter("list_pools")
        with self._lock:
            return [self._pools[name] for name in sorted(self._pools)]

    def write_pool(
        self,
        snapshot: PoolSnapshot,
        allocations: Mapping[int, Allocation],
        *,
        annotations: Mapping[str, str] | None = None,
        size: int | None = None,
        network: str | None = None,
        marks: Mapping[str, str] | None = None,
    ) -> PoolSnapshot:
        checked_name("IPPool", snapshot.name)
        self._enter("write_pool")
        where = f"IPPool {self.namespace}/{snapshot.name}"
        with self._lock:
            stored = self._pools.get(snapshot.name)
            if snapshot.resource_version is None:
                if stored is not None:
                    raise AlreadyExistsError(f"creating {where}: already exists")
                metadata: Mapping[str, Any] = (
                    {"annotations": {**(annotations or {}), **(marks or {})}}
                    if annotations or marks
                    else {}
                )
            else:
                if stored is None:
                    raise ConflictError(f"updating {where}: conflict", "it no longer exists")
                if stored.resource_version != snapshot.resource_version:
                    raise ConflictError(
                        f"updating {where}: conflict",
                        "the object has been modified; read it again",
                    )
                metadata = stored.metadata
                if marks:
                    kept = dict(metadata.get("annotations") or {})
                    metadata = {**metadata, "annotations": {**kept, **marks}}
            written = PoolSnapshot(
                name=snapshot.name,
                cidr=snapshot.cidr,
                # Through the CR format, as the API would store them.
                allocations=decode_allocations(
                    {"allocations": encode_allocations(allocations)}, pool=snapshot.name
                ),
                resource_version=self._next_version(),
                metadata=metadata,
                status=pool_status(
                    snapshot, allocations, size=size, network=network, annotations=annotations
                ),
            )
            self._pools[snapshot.name] = written
        self._pool_log.record(snapshot.name, written)
        return written

    def delete_pool(self, snapshot: PoolSnapshot) -> bool:
        checked_name("IPPool", snapshot.name)
        self._enter("delete_pool")
        with self._lock:
            stored = self._pools.get(snapshot.name)
            if stored is None:
                return False
            if stored.resource_version != snapshot.resource_version:
                raise ConflictError(
                    f"deleting IPPool {self.namespace}/{snapshot.name}: conflict",
                    "precondition failed: the object has been modified",
                )
            del self._pools[snapshot.name]
        self._pool_log.record(snapshot.name, None)
        return True

    def watch_pool(self, name: str, timeout_s: float = 60.0) -> Iterator[PoolMark | None]:
        """As KubeStore.watch_pool: the metadata first (if it exists), then each change."""
        checked_name("IPPool", name)
        self._enter("watch_pool")
        for snapshot in self._pool_log.follow(name, self._pools.get, self._lock, timeout_s):
            yield None if snapshot is None else _mark(snapshot)

    # --- OverlappingRangeIPReservations -------------------------------------------
    def get_reservation(self, name: str) -> Reservation | None:
        checked_name("OverlappingRangeIPReservation", name)
        self._enter("get_reservation")
        with self._lock:
            return self._reservations.get(name)

    def list_reservations(self) -> list[Reservation]:
        self._enter("list_reservations")
        with self._lock:
            return [self._reservations[name] for name in sorted(self._reservations)]

    def create_reservation(self, name: str, holder: Allocation) -> Reservation:
        checked_name("OverlappingRangeIPReservation", name)
        self._enter("create_reservation")
        with self._lock:
            if name in self._reservations:
                raise AlreadyExistsError(
                    f"creating OverlappingRangeIPReservation {name}: already exists"
                )
            made = Reservation(name, _as_stored(holder), self._next_version())
            self._reservations[name] = made
            return made

    def update_reservation(self, reservation: Reservation, holder: Allocation) -> Reservation:
        checked_name("OverlappingRangeIPReservation", reservation.name)
        self._enter("update_reservation")
        where = f"updating OverlappingRangeIPReservation {reservation.name}"
        with self._lock:
            stored = self._reservations.get(reservation.name)
            if stored is None or stored.resource_version != reservation.resource_version:
                raise ConflictError(f"{where}: conflict", "the object has been modified")
            updated = replace(
                stored, holder=_as_stored(holder), resource_version=self._next_version()
            )
            self._reservations[reservation.name] = updated
            return updated

    def delete_reservation(self, reservation: Reservation) -> bool:
        checked_name("OverlappingRangeIPReservation", reservation.name)
        self._enter("delete_reservation")
        with self._lock:
            stored = self._reservations.get(reservation.name)
            if stored is None:
                return False
            if stored.resource_version != reservation.resource_version:
                raise ConflictError(
                    f"deleting OverlappingRangeIPReservation {reservation.name}: conflict",
                    "precondition failed: the object has been modified",
                )
            del self._reservations[reservation.name]
            return True

    # --- Leases --------------------------------------------------------------------
    def get_lease(self, name: str) -> LeaseRecord | None:
        checked_name("Lease", name)
        self._enter("get_lease")
        with self._lock:
            return self._leases.get(name)

    def write_lease(
        self,
        current: LeaseRecord | None,
        name: str,
        holder: str,
        duration_s: float,
        notes: Mapping[str, str] | None = None,
    ) -> LeaseRecord:
        checked_name("Lease", name)
        self._enter("write_lease")
        with self._lock:
            stored = self._leases.get(name)
            if current is None and stored is not None:
                raise AlreadyExistsError(f"creating Lease {name}: already exists")
            if current is not None and (
                stored is None or stored.resource_version != current.resource_version
            ):
                raise ConflictError(f"updating Lease {name}: conflict")
            # The API stores whole seconds (leaseDurationSeconds) and microseconds.
            record = LeaseRecord(
                name=name,
                holder=holder,
                renewed=self._clock().astimezone(dt.UTC),
                duration_s=float(max(1, round(duration_s))),
                resource_version=self._next_version(),
                notes={**(stored.notes if stored is not None else {}), **(notes or {})},
            )
            self._leases[name] = record
        self._lease_log.record(name, record)
        return record

    def note_lease(self, name: str, notes: Mapping[str, str | None]) -> LeaseRecord:
        checked_name("Lease", name)
        self._enter("note_lease")
        with self._lock:
            stored = self._leases.get(name)
            merged = dict(stored.notes) if stored is not None else {}
            for key, value in notes.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            version = self._next_version()
            if stored is None:  # made, held by nobody, as the API makes it from an empty spec
                record = LeaseRecord(name, "", None, 0.0, version, merged)
            else:
                record = replace(stored, resource_version=version, notes=merged)
            self._leases[name] = record
        self._lease_log.record(name, record)
        return record

    def delete_lease(self, record: LeaseRecord) -> bool:
        checked_name("Lease", record.name)
        self._enter("delete_lease")
        with self._lock:
            stored = self._leases.get(record.name)
            if stored is None:
                return False
            if stored.resource_version != record.resource_version:
                raise ConflictError(
                    f"deleting Lease {record.name}: conflict",
                    "precondition failed: the object has been modified",
                )
            del self._leases[record.name]
        self._lease_log.record(record.name, None)
        return True

    def watch_lease(self, name: str, timeout_s: float = 60.0) -> Iterator[LeaseRecord | None]:
        """As KubeStore.watch_lease: the Lease first (if it exists), then every change
        (None: deleted), until ``timeout_s`` have passed."""
        checked_name("Lease", name)
        self._enter("watch_lease")
        yield from self._lease_log.follow(name, self._leases.get, self._lock, timeout_s)

    # --- Pods (read only) ----------------------------------------------------------
    def get_pod(self, namespace: str, name: str) -> PodState | None:
        checked_namespace(namespace)
        checked_name("Pod", name)
        self._enter("get_pod")
        return self._pods.get((namespace, name))

    def list_pods(self) -> list[PodState]:
        self._enter("list_pods")
        return [self._pods[key] for key in sorted(self._pods)]

    # --- IPAMClaims ------------------------------------------------------------------
    def get_ipam_claim(self, namespace: str, name: str) -> ClaimState | None:
        checked_namespace(namespace)
        checked_name("IPAMClaim", name)
        self._enter("get_ipam_claim")
        return self._claims.get((namespace, name))

    def list_ipam_claims(self) -> list[ClaimState]:
        self._enter("list_ipam_claims")
        return [self._claims[key] for key in sorted(self._claims)]

    def write_ipam_claim_status(
        self, claim: ClaimState, ips: list[str], owner_pod: str
    ) -> ClaimState:
        checked_namespace(claim.namespace)
        checked_name("IPAMClaim", claim.name)
        self._enter("write_ipam_claim_status")
        with self._lock:
            stored = self._claims.get((claim.namespace, claim.name))
            where = f"writing the status of IPAMClaim {claim.namespace}/{claim.name}"
            if stored is None:
                raise NotFoundError(f"{where}: not found", "the IPAMClaim does not exist")
            if stored.resource_version != claim.resource_version:
                raise ConflictError(
                    f"{where}: conflict", "the object has been modified; read it again"
                )
            updated = replace(
                stored,
                ips=tuple(ips),
                owner_pod=owner_pod,
                conditions=tuple(
                    allocated_conditions(
                        stored.conditions, self._clock().strftime("%Y-%m-%dT%H:%M:%SZ")
                    )
                ),
                resource_version=self._next_version(),
            )
            self._claims[(claim.namespace, claim.name)] = updated
            return updated

    # --- Events ----------------------------------------------------------------------
    def create_event(
        self,
        about: ObjectRef,
        reason: str,
        message: str,
        *,
        warning: bool = False,
        component: str = "whereabouts-py",
        instance: str = "",
    ) -> None:
        checked_namespace(about.namespace)
        self._enter("create_event")
        self.events.append(RecordedEvent(about, reason, message[:1024], warning, component))


def _as_stored(holder: Allocation) -> Allocation:
    """What a reservation keeps of its holder: what its CR format carries."""
    return decode_reservation(encode_reservation(holder))


if TYPE_CHECKING:  # mypy holds both stores to the protocol
    _memory_is_a_store: type[Store] = MemoryStore
    _kube_is_a_store: type[Store] = KubeStore


def _mark(snapshot: PoolSnapshot) -> PoolMark:
    annotations = snapshot.metadata.get("annotations") or {}
    return PoolMark(snapshot.name, str(snapshot.resource_version), dict(annotations))


class _ChangeLog(Generic[T]):
    """Every change of the objects of one kind, numbered, for watches of one object."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._count = 0
        # As many changes per object as a watch may lag behind.
        self._events: dict[str, deque[tuple[int, T | None]]] = {}

    def record(self, name: str, value: T | None) -> None:
        with self._changed:
            self._count += 1
            self._events.setdefault(name, deque(maxlen=4096)).append((self._count, value))
            self._changed.notify_all()

    def follow(
        self,
        name: str,
        current: Callable[[str], T | None],
        lock: threading.Lock,
        timeout_s: float,
    ) -> Iterator[T | None]:
        """The object's state first (if it exists), then every change, until the timeout."""
        until = time.monotonic() + timeout_s
        with self._changed:
            seen = self._count
            with lock:
                state = current(name)
        if state is not None:
            yield state
        while True:
            with self._changed:
                news = [event for event in self._events.get(name, ()) if event[0] > seen]
                while not news:
                    remaining = until - time.monotonic()
                    if remaining <= 0:
                        return
                    self._changed.wait(remaining)
                    news = [event for event in self._events.get(name, ()) if event[0] > seen]
                seen = news[-1][0]
            for _, value in news:
                yield value
