"""What the daemon and the reconciler need of a store: the ``Store`` protocol.

Two implementations keep the same semantics, held together by one contract
test (tests/store/test_store_contract.py): ``KubeStore`` (the Kubernetes
API, the only one the product runs on) and ``MemoryStore`` (its in-memory
twin, for fast deterministic tests of the logic above it).

The semantics every store keeps:

* Every write of a pool, reservation or Lease is a compare-and-swap on the
  ``resource_version`` it was read with: a stale one raises
  ``ConflictError``; creating what exists raises ``AlreadyExistsError``.
* A missing pool reads as an empty snapshot without ``resource_version``; a
  missing reservation, Lease, pod or IPAMClaim reads as None; deleting a reservation
  that is gone answers False.
* A name Kubernetes would refuse raises ``InvalidNameError`` before anything
  is read or written.
* Unreachable or overloaded: ``ApiUnavailableError``; refused: ``StoreError``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from whereabouts_py.core.allocator import Allocation
from whereabouts_py.core.claims import ClaimState
from whereabouts_py.core.ownership import PodState
from whereabouts_py.store.values import LeaseRecord, ObjectRef, PoolMark, PoolSnapshot, Reservation


class Store(Protocol):
    """IPPools, reservations and Leases of one namespace; Pods and Events for the reconciler."""

    namespace: str

    def ping(self) -> str:
        """The server's version; ApiUnavailableError/StoreError when it cannot be reached."""
        ...

    def get_pool(self, name: str, cidr: str) -> PoolSnapshot: ...

    def list_pools(self) -> list[PoolSnapshot]: ...

    def write_pool(
        self,
        snapshot: PoolSnapshot,
        allocations: Mapping[int, Allocation],
        *,
        annotations: Mapping[str, str] | None = None,
        size: int | None = None,
        network: str | None = None,
        marks: Mapping[str, str] | None = None,
    ) -> PoolSnapshot: ...

    def watch_pool(self, name: str, timeout_s: float = 60.0) -> Iterator[PoolMark | None]: ...

    def delete_pool(self, snapshot: PoolSnapshot) -> bool:
        """Delete the pool if unchanged since ``snapshot`` (ConflictError if it changed);
        False when it was already gone."""
        ...

    def get_reservation(self, name: str) -> Reservation | None: ...

    def list_reservations(self) -> list[Reservation]: ...

    def create_reservation(self, name: str, holder: Allocation) -> Reservation: ...

    def update_reservation(self, reservation: Reservation, holder: Allocation) -> Reservation: ...

    def delete_reservation(self, reservation: Reservation) -> bool: ...

    def get_lease(self, name: str) -> LeaseRecord | None: ...

    def write_lease(
        self,
        current: LeaseRecord | None,
        name: str,
        holder: str,
        duration_s: float,
        notes: Mapping[str, str] | None = None,
    ) -> LeaseRecord: ...

    def note_lease(self, name: str, notes: Mapping[str, str | None]) -> LeaseRecord:
        """Set (None: remove) the Lease's annotations without compare-and-swap (writers
        of different annotations never conflict); makes it, held by nobody, if missing."""
        ...

    def delete_lease(self, record: LeaseRecord) -> bool:
        """Delete the Lease if unchanged since read (ConflictError if it changed); False if gone."""
        ...

    def watch_lease(self, name: str, timeout_s: float = 60.0) -> Iterator[LeaseRecord | None]:
        """The Lease first (if it exists), then every change (None: deleted), until about
        ``timeout_s`` have passed; StoreError if the watch cannot be opened or breaks."""
        ...

    def get_pod(self, namespace: str, name: str) -> PodState | None: ...

    def list_pods(self) -> list[PodState]: ...

    def get_ipam_claim(self, namespace: str, name: str) -> ClaimState | None:
        """The IPAMClaim, or None when there is none of that name."""
        ...

    def list_ipam_claims(self) -> list[ClaimState]:
        """Every IPAMClaim of the cluster (none when the CRD is not installed)."""
        ...

    def write_ipam_claim_status(
        self, claim: ClaimState, ips: list[str], owner_pod: str
    ) -> ClaimState:
        """Write ``status.ips`` (CIDR strings) and ``status.ownerPod`` through the
        status subresource, if the claim is unchanged since read (else ConflictError);
        NotFoundError when it is gone."""
        ...

    def create_event(
        self,
        about: ObjectRef,
        reason: str,
        message: str,
        *,
        warning: bool = False,
        component: str = "whereabouts-py",
        instance: str = "",
    ) -> None: ...
