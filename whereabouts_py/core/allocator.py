"""Allocation policy: who holds which offset of a range, and how that changes.

Pure functions over offset-keyed mappings (``Mapping[int, Allocation]``, the
shape of ``IPPool.spec.allocations``). Each returns a new dict and never
mutates its input, so the store can retry a compare-and-swap with the very
same function on a fresher pool.

- ADD is idempotent per attachment: the same pod reference and interface name
  get the offset they already hold, and the new container ID is recorded, so
  the DEL of the new sandbox releases it and a late DEL of the old one does not.
- DEL matches container ID and interface name and succeeds when nothing matches.

Which records name the same attachment is decided here, once, for the daemon
and the reconciler alike (``whereabouts_py.core.ownership`` re-exports the
rules): ``same_container_interface`` (strict: this container's interface) and
``same_pod_interface`` (lenient: any sandbox of this pod's interface), combined
into ``same_sandbox_attachment`` (whose record is it to delete?) and
``same_attachment`` (is this entry the attachment's, perhaps from an older
sandbox?). They live beside ``Allocation`` because the allocator needs them
and the ownership module builds on the allocator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import netaddr

from whereabouts_py.core.addresses import AddressRange
from whereabouts_py.core.claims import is_claimed
from whereabouts_py.errors import AddressOutOfRangeError, AddressTakenError, PoolExhaustedError


@dataclass(frozen=True)
class Allocation:
    """The owner of one address: a container's interface in a pod.

    ``podref`` is ``"namespace/name"``. ``node`` and ``pod_uid`` are our
    additions; objects written by the Go project lack them. ``ipam_claim``
    (``ipamclaimref``, "namespace/name" of an IPAMClaim) is the Go project's;
    it is kept so that rewriting a pool never drops it.
    """

    container_id: str
    podref: str
    ifname: str
    node: str | None = None
    pod_uid: str | None = None
    ipam_claim: str | None = None

    def describe(self) -> str:
        """How error messages name the owner."""
        who = f"pod {self.podref}" if names_a_pod(self.podref) else "no pod"
        return f"{who} (container {self.container_id or '?'}, interface {self.ifname or '?'})"


# --- which records name the same attachment ---------------------------------------------


def names_a_pod(podref: str) -> bool:
    """Whether a ``podref`` names a pod (``namespace/name``, both parts non-empty)."""
    namespace, slash, name = podref.partition("/")
    return bool(slash and namespace and name)


def _same_interface(recorded: str, asked: str) -> bool:
    """Interface names match; a record without one (written by Go versions before
    interfaces were recorded) matches every interface."""
    return recorded in (asked, "")


def same_claim(record: Allocation, owner: Allocation) -> bool:
    """Both belong to the IPAMClaim ``owner`` names, whichever of its pods recorded them."""
    return is_claimed(owner.ipam_claim) and record.ipam_claim == owner.ipam_claim


def same_container_interface(record: Allocation, owner: Allocation) -> bool:
    """Strict: ``record`` was made by this very container's interface.

    Container IDs are unique to a sandbox, so this is the match of DEL, CHECK,
    GC and a rollback. A record without a container ID (the Go project's
    reservations) never matches this way.
    """
    return (
        bool(owner.container_id)
        and record.container_id == owner.container_id
        and _same_interface(record.ifname, owner.ifname)
    )


def same_pod_interface(record: Allocation, owner: Allocation) -> bool:
    """Lenient: ``record`` was made for this pod's interface, by any of its sandboxes.

    Never true when ``owner`` names no pod: attachments made without pod
    identity would otherwise all look like the same one.
    """
    return (
        names_a_pod(owner.podref)
        and record.podref == owner.podref
        and _same_interface(record.ifname, owner.ifname)
    )


def same_sandbox_attachment(record: Allocation, owner: Allocation) -> bool:
    """Whether ``record`` is exactly ``owner``'s: deleting it frees ``owner``'s hold only.

    By container and interface when the record has a container ID; the Go
    project writes its reservations with ``podref`` and ``ifname`` only, and
    such a record is the owner's when its pod and interface match (what the Go
    DEL compares). A record of the owner's IPAMClaim is the owner's.
    """
    if same_claim(record, owner):
        return True
    if record.container_id:
        return same_container_interface(record, owner)
    return same_pod_interface(record, owner)


def same_attachment(record: Allocation, owner: Allocation) -> bool:
    """Whether ``record`` is ``owner``'s attachment, possibly from an older sandbox.

    Pods are matched by reference and interface: an ADD in a new sandbox takes
    over the pod's entry, and until it has, the reservation still names the old
    container; that is not a conflict. Without pod identity (plain CNI), by
    container and interface. A record of the owner's IPAMClaim is the owner's,
    whichever of the claim's pods recorded it.
    """
    if same_claim(record, owner):
        return True
    if names_a_pod(owner.podref) or names_a_pod(record.podref):
        return same_pod_interface(record, owner)
    return same_container_interface(record, owner)


def find_owned(allocations: Mapping[int, Allocation], podref: str, ifname: str) -> int | None:
    """The lowest offset held by this pod's interface, or None.

    A podref that names no pod (empty, or ``"/"``) matches nothing: otherwise
    every attachment made without pod identity would look like the same one.
    """
    asked = Allocation("", podref, ifname)
    owned = [
        offset
        for offset, allocation in allocations.items()
        if same_pod_interface(allocation, asked)
    ]
    return min(owned) if owned else None


def find_claimed(allocations: Mapping[int, Allocation], ipam_claim: str) -> int | None:
    """The lowest offset an IPAMClaim (``namespace/name``) owns, or None."""
    owned = [
        offset for offset, allocation in allocations.items() if allocation.ipam_claim == ipam_claim
    ]
    return min(owned) if owned else None


def _find_attachment(allocations: Mapping[int, Allocation], owner: Allocation) -> int | None:
    """Idempotency lookup: the claim's entry, or the attachment's (``same_attachment``).

    An owner with an IPAMClaim gets what the claim owns, whichever pod recorded
    it (a VM's next pod, or the target pod of a live migration).
    """
    if owner.ipam_claim:
        return find_claimed(allocations, owner.ipam_claim)
    # same_attachment needs the pod or the container to be the same (the claim
    # case is above): compared first, so that a full pool costs one comparison
    # per entry, not a call.
    podref, container_id = owner.podref, owner.container_id
    owned = [
        offset
        for offset, allocation in allocations.items()
        if (allocation.podref == podref or allocation.container_id == container_id)
        and same_attachment(allocation, owner)
    ]
    return min(owned) if owned else None


def assign(
    rng: AddressRange,
    allocations: Mapping[int, Allocation],
    owner: Allocation,
    requested: netaddr.IPAddress | None = None,
    blocked: Callable[[int], bool] | None = None,
) -> tuple[int, dict[int, Allocation]]:
    """Give ``owner`` an offset of ``rng``; return it with the new allocations.

    ``requested`` asks for one specific address. ``blocked`` lets the caller
    veto offsets the pool itself does not show as held (e.g. reserved
    cluster-wide by another attachment in an overlapping range).

    When the attachment already holds an offset, that offset is returned and
    the new container ID recorded; if it asked for a different address it
    moves there, so an attachment never holds two addresses of one range.
    """
    current = _find_attachment(allocations, owner)
    if current is not None and (
        requested is None or (rng.contains(requested) and rng.offset_of(requested) == current)
    ):
        updated = dict(allocations)
        updated[current] = owner
        return current, updated

    if requested is not None:
        offset = _check_requested(rng, allocations, owner, requested, blocked)
    else:
        others: Mapping[int, Allocation] = allocations
        if current is not None:
            others = {k: v for k, v in allocations.items() if k != current}
        found = rng.lowest_free(others, blocked)
        if found is None:
            raise _exhausted(rng)
        offset = found

    updated = dict(allocations)
    if current is not None:
        del updated[current]
    updated[offset] = owner
    return offset, updated


def _check_requested(
    rng: AddressRange,
    allocations: Mapping[int, Allocation],
    owner: Allocation,
    requested: netaddr.IPAddress,
    blocked: Callable[[int], bool] | None,
) -> int:
    reason = rng.why_not_assignable(requested)
    if reason is not None:
        raise AddressOutOfRangeError(
            f"requested address {requested} cannot be assigned from {rng.label}",
            f"it {reason}; request an assignable address of the range or none at all",
        )
    offset = rng.offset_of(requested)
    holder = allocations.get(offset)
    if holder is not None:
        raise AddressTakenError(
            f"requested address {requested} is already allocated",
            f"held by {holder.describe()}; request another address or free this one",
        )
    if blocked is not None and blocked(offset):
        raise AddressTakenError(
            f"requested address {requested} is already reserved",
            "another attachment holds it in an overlapping range; request another address",
        )
    return offset


def _exhausted(rng: AddressRange) -> PoolExhaustedError:
    capacity = rng.capacity()
    if capacity == 0:
        return PoolExhaustedError(
            f"no assignable address in {rng.label}",
            "the range has none (a /31, /32, /127 or /128, or everything excluded); "
            "configure a larger range",
        )
    return PoolExhaustedError(
        f"no free address in {rng.label}",
        f"all {capacity} assignable addresses are allocated or reserved; "
        "enlarge the range or free addresses of deleted pods",
    )


def release(
    allocations: Mapping[int, Allocation], container_id: str, ifname: str
) -> tuple[dict[int, Allocation], list[int]]:
    """Drop what this container's interface holds; return the rest and the freed offsets.

    Allocations written by old Go versions have no interface name; they match
    on the container ID alone. An address an IPAMClaim owns is never freed
    here: it stays the claim's until the claim is deleted.
    """
    asked = Allocation(container_id, "", ifname)
    return release_where(
        allocations,
        lambda allocation: (
            not allocation.ipam_claim and same_container_interface(allocation, asked)
        ),
    )


def release_where(
    allocations: Mapping[int, Allocation], predicate: Callable[[Allocation], bool]
) -> tuple[dict[int, Allocation], list[int]]:
    """Drop every allocation ``predicate`` selects; return the rest and the freed offsets."""
    remaining: dict[int, Allocation] = {}
    released: list[int] = []
    for offset, allocation in allocations.items():
        if predicate(allocation):
            released.append(offset)
        else:
            remaining[offset] = allocation
    released.sort()
    return remaining, released
