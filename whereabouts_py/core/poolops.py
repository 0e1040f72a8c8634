"""Operations on one IPPool's entries, as pure functions, and what a pool can hold.

Each operation takes the allocations of one pool object and returns the new
allocations with a value; it never mutates its input, so a pool writer can
run it again on a fresher pool after a compare-and-swap conflict. They are the
steps the daemon's ADD, DEL, GC and rollback compose.

A large range is stored as blocks (``whereabouts_py.core.shards``) whose keys
are local to the block; operations are written with whole-range offsets and
``on_shard`` runs them on a block.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TypeVar

import netaddr

from whereabouts_py.core.allocator import (
    Allocation,
    release_where,
    same_attachment,
    same_container_interface,
)
from whereabouts_py.core.shards import Shard

Allocations = dict[int, Allocation]
T = TypeVar("T")


def on_shard(
    shard: Shard, whole_op: Callable[[Allocations], tuple[Allocations, T]]
) -> Callable[[Allocations], tuple[Allocations, T]]:
    """Run an operation written for whole-range offsets on a block keyed locally."""
    if shard.base == 0:
        return whole_op

    def operation(local: Allocations) -> tuple[Allocations, T]:
        whole = {shard.to_whole(key): holder for key, holder in local.items()}
        updated, value = whole_op(whole)
        return {shard.to_local(key): holder for key, holder in updated.items()}, value

    return operation


def release_offset(
    offset: int, owner: Allocation
) -> Callable[[Allocations], tuple[Allocations, bool]]:
    """Free ``offset`` if (and only if) ``owner``'s container interface still holds it.

    The value says whether it was freed. A newer sandbox of the same pod that
    took the entry over meanwhile keeps it.
    """

    def operation(allocations: Allocations) -> tuple[Allocations, bool]:
        holder = allocations.get(offset)
        if holder is not None and same_container_interface(holder, owner):
            remaining = dict(allocations)
            del remaining[offset]
            return remaining, True
        return allocations, False

    return operation


def mirror_offset(
    offset: int, owner: Allocation
) -> Callable[[Allocations], tuple[Allocations, bool]]:
    """Record ``owner`` at ``offset`` unless another attachment holds it there.

    The value says whether ``owner`` holds it now. Used on the Go project's
    whole-range object of a range we store as blocks, so that the Go plugin
    never hands out what we hold.
    """

    def operation(allocations: Allocations) -> tuple[Allocations, bool]:
        holder = allocations.get(offset)
        if holder == owner:
            return allocations, True
        if holder is None or same_attachment(holder, owner):
            updated = dict(allocations)
            updated[offset] = owner
            return updated, True
        return allocations, False

    return operation


def sweep(doomed: Collection[Allocation]) -> Callable[[Allocations], tuple[Allocations, int]]:
    """Free every entry judged stale, if it is unchanged; the value is how many went.

    An entry rewritten since it was judged (a new container ID, node or claim)
    is another ``Allocation`` and stays.
    """
    stale = frozenset(doomed)

    def operation(allocations: Allocations) -> tuple[Allocations, int]:
        remaining, released = release_where(allocations, stale.__contains__)
        return remaining, len(released)

    return operation


def pool_size(cidr: str, whole_range: str | None = None) -> int:
    """Addresses an IPPool can hand out: all of ``cidr`` but its range's network and last.

    A block of a large range (``whole_range`` set) loses only the whole range's
    network and last address, where they fall in it. A range of two addresses
    or fewer has none; an unreadable one reads as 0.
    """
    try:
        block = netaddr.IPNetwork(cidr)
        whole = netaddr.IPNetwork(whole_range) if whole_range else block
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return 0
    if whole.size <= 2:
        return 0
    edges = sum(1 for address in (whole.first, whole.last) if block.first <= address <= block.last)
    return max(0, int(block.size) - edges)
