"""Allocation policy: who holds which offset of a range, and how that changes.

Pure functions over offset-keyed mappings (``Mapping[int, Allocation]``, the
shape of ``IPPool.spec.allocations``). Each returns a new dict and never
mutates its input, so the store can retry a compare-and-swap with the very
same function on a fresher pool.

- ADD is idempotent per attachment: the same pod reference and interface name
  get the offset they already hold, and the new container ID is recorded, so
  the DEL of the new sandbox releases it and a late DEL of the old one does not.
- DEL matches container ID and interface name and succeeds when nothing matches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import netaddr

from whereabouts_py.core.addresses import AddressRange
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
        who = f"pod {self.podref}" if _names_a_pod(self.podref) else "no pod"
        return f"{who} (container {self.container_id or '?'}, interface {self.ifname or '?'})"


def _names_a_pod(podref: str) -> bool:
    namespace, slash, name = podref.partition("/")
    return bool(slash and namespace and name)


def find_owned(allocations: Mapping[int, Allocation], podref: str, ifname: str) -> int | None:
    """The lowest offset held by this pod's interface, or None.

    A podref that names no pod (empty, or ``"/"``) matches nothing: otherwise
    every attachment made without pod identity would look like the same one.
    """
    if not _names_a_pod(podref):
        return None
    owned = [
        offset
        for offset, allocation in allocations.items()
        if allocation.podref == podref and allocation.ifname == ifname
    ]
    return min(owned) if owned else None


def find_claimed(allocations: Mapping[int, Allocation], ipam_claim: str) -> int | None:
    """The lowest offset an IPAMClaim (``namespace/name``) owns, or None."""
    owned = [
        offset for offset, allocation in allocations.items() if allocation.ipam_claim == ipam_claim
    ]
    return min(owned) if owned else None


def _find_attachment(allocations: Mapping[int, Allocation], owner: Allocation) -> int | None:
    """Idempotency lookup: by claim, by pod and interface, or by container when there is no pod.

    An owner with an IPAMClaim gets what the claim owns, whichever pod recorded
    it (a VM's next pod, or the target pod of a live migration).
    """
    if owner.ipam_claim:
        return find_claimed(allocations, owner.ipam_claim)
    if _names_a_pod(owner.podref):
        return find_owned(allocations, owner.podref, owner.ifname)
    owned = [
        offset
        for offset, allocation in allocations.items()
        if allocation.container_id == owner.container_id and allocation.ifname == owner.ifname
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
    return release_where(
        allocations,
        lambda allocation: (
            not allocation.ipam_claim
            and allocation.container_id == container_id
            and allocation.ifname in (ifname, "")
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
