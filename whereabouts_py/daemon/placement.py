"""Which IPPool object (shard) of a large range an attachment goes to.

Ranges of up to 256 addresses are one object and need no choice. For larger
ranges (see ``core.shards``) this daemon remembers, per range:

* where each attachment it knows about lives (so ADD stays idempotent and DEL
  finds the entry without reading every shard), learnt from one LIST when the
  range is first used and kept current by our own writes;
* which shards it found full (skipped for a while, then tried again);
* its *home* shard: the one it last allocated in, tried first, so each node
  keeps writing its own block and nodes do not fight over one object.

Shards whose coordination Lease another node holds are avoided while others
are free. None of this decides correctness: every write is still a
compare-and-swap on the shard's IPPool, so a stale index costs an extra try,
never a duplicate.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from whereabouts_py.core.addresses import AddressRange
from whereabouts_py.core.allocator import Allocation
from whereabouts_py.core.shards import (
    SHARD_BITS,
    Shard,
    is_sharded,
    shard_for_cidr,
    shard_indexes,
    shard_of,
    shards,
)
from whereabouts_py.daemon.deadline import checkpoint
from whereabouts_py.store.values import PoolSnapshot

# How long a block found full is skipped. Our own DELs clear the mark at once;
# other nodes' releases are noticed when it runs out.
FULL_FOR_S = 300.0
# Once the blocks in front are held by other nodes, a node goes on from a place
# of its own among this many blocks (262,144 addresses).
SPREAD_BLOCKS = 4096


@dataclass
class RangeIndex:
    """This daemon's knowledge of one sharded range."""

    rng: AddressRange
    by_pod: dict[tuple[str, str], int] = field(default_factory=dict)
    by_container: dict[tuple[str, str], int] = field(default_factory=dict)
    full_until: dict[int, float] = field(default_factory=dict)
    home: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def learn(self, index: int, allocations: dict[int, Allocation] | None = None) -> None:
        for holder in (allocations or {}).values():
            self.note(index, holder)

    def note(self, index: int, holder: Allocation) -> None:
        with self.lock:
            if holder.podref:
                self.by_pod[(holder.podref, holder.ifname)] = index
            self.by_container[(holder.container_id, holder.ifname)] = index

    def forget(self, holder: Allocation) -> None:
        with self.lock:
            self.by_container.pop((holder.container_id, holder.ifname), None)
            if holder.podref and self.by_pod.get((holder.podref, holder.ifname)) is not None:
                self.by_pod.pop((holder.podref, holder.ifname), None)

    def mark_full(self, index: int) -> None:
        with self.lock:
            self.full_until[index] = time.monotonic() + FULL_FOR_S
            if self.home == index:
                self.home = None

    def mark_has_room(self, index: int) -> None:
        with self.lock:
            self.full_until.pop(index, None)

    def is_full(self, index: int) -> bool:
        until = self.full_until.get(index)
        return until is not None and time.monotonic() < until

    def where(self, owner: Allocation) -> int | None:
        with self.lock:
            if owner.podref:
                found = self.by_pod.get((owner.podref, owner.ifname))
                if found is not None:
                    return found
            return self.by_container.get((owner.container_id, owner.ifname))


def _in_use(shard: Shard, snapshot: PoolSnapshot) -> int:
    """How many assignable addresses of ``shard`` the pool holds."""
    window = shard.window
    return sum(
        1 for key in snapshot.allocations if window.is_assignable_offset(shard.to_whole(key))
    )


class Placement:
    """Chooses shards; one per daemon."""

    def __init__(
        self,
        list_pools: Callable[[], list[PoolSnapshot]],
        identity: str = "",
    ) -> None:
        self._list_pools = list_pools
        # Where this node starts looking for a block of its own (see _walk).
        self._spread = zlib.crc32(identity.encode())
        self._indexes: dict[str, RangeIndex] = {}
        self._lock = threading.Lock()

    def index(self, key: str, rng: AddressRange) -> RangeIndex:
        """The index of a sharded range, built from one LIST on first use."""
        with self._lock:
            existing = self._indexes.get(key)
            if existing is not None:
                return existing
            index = RangeIndex(rng)
            for snapshot in self._list_pools():
                shard = shard_for_cidr(rng, snapshot.cidr)
                if shard is not None:
                    index.learn(shard.index, dict(snapshot.allocations))
                    capacity = shard.window.capacity()
                    if capacity and _in_use(shard, snapshot) >= capacity:
                        index.mark_full(shard.index)  # no write needed to find that out
            self._indexes[key] = index
            return index

    def candidates(
        self, key: str, rng: AddressRange, owner: Allocation, claim: Callable[[Shard], bool]
    ) -> Iterator[Shard]:
        """Shards to try for a new address, best first.

        ``claim`` takes a block's Lease without waiting and says whether this
        node holds it now; blocks other nodes hold come last. Before each step
        that costs a request to the API, the serving request's scope is
        checked, so the walk stops when the client has gone.
        """
        if not is_sharded(rng):
            yield from shards(rng)
            return
        index = self.index(key, rng)
        tried: set[int] = set()
        known = index.where(owner)
        if known is not None:
            tried.add(known)
            checkpoint("trying the block that holds this attachment")
            yield shard_of(rng, known << SHARD_BITS)
        busy: list[Shard] = []
        home = index.home
        if home is not None and home not in tried and not index.is_full(home):
            shard = shard_of(rng, home << SHARD_BITS)
            checkpoint(f"claiming block {shard.cidr}")
            if claim(shard):
                tried.add(home)
                yield shard
        # Blocks come from the range's runs of assignable addresses: excluded
        # stretches are jumped over, so the steps before a free block are
        # bounded by the blocks in use (full, or held by other nodes), never by
        # the size of the address space.
        for block in self._walk(rng, busy):
            if block in tried or index.is_full(block):
                continue
            shard = shard_of(rng, block << SHARD_BITS)
            checkpoint(f"claiming block {shard.cidr}")
            if not claim(shard):
                busy.append(shard)
                continue
            tried.add(block)
            yield shard
        # Every free shard is being written by another node: share one.
        for shard in busy:
            if shard.index not in tried:
                tried.add(shard.index)
                checkpoint(f"trying block {shard.cidr}")
                yield shard
        # Shards thought full may have room again.
        with index.lock:
            thought_full = sorted(index.full_until)
        for block in thought_full:
            if block not in tried:
                tried.add(block)
                checkpoint("trying a block found full before")
                yield shard_of(rng, block << SHARD_BITS)

    def _walk(self, rng: AddressRange, busy: list[Shard]) -> Iterator[int]:
        """The range's blocks in the order this node tries them.

        Lowest first while the blocks are free or full; once one turns out to
        be held by another node (``busy`` is no longer empty), the node goes
        on from a place of its own among the first SPREAD_BLOCKS blocks (by a
        hash of its name), round, then on to the rest. Going on in order
        instead, a node would ask for the Lease of every block the others
        hold: with 100 nodes, some 12 Lease reads per allocation. Scattered
        (a stride through them, from a start, both of this node's own), the
        blocks the others hold, wherever they lie, are met about as often as
        their share of the blocks. The walk stays bounded by SPREAD_BLOCKS
        plus the blocks in use.
        """
        blocks = shard_indexes(rng)
        first = list(itertools.islice(blocks, SPREAD_BLOCKS))
        for position, block in enumerate(first):
            if busy:
                yield from _scattered(first[position:], self._spread)
                break
            yield block
        yield from blocks

    def located(self, key: str, rng: AddressRange, owner: Allocation) -> Shard | None:
        """The shard known to hold ``owner`` (by pod or container), if any."""
        if not is_sharded(rng):
            return shard_of(rng, 0)
        found = self.index(key, rng).where(owner)
        return None if found is None else shard_of(rng, found << SHARD_BITS)


def _scattered(blocks: list[int], seed: int) -> Iterator[int]:
    """Every one of ``blocks`` once, in an order of ``seed``'s own: from a start, by a
    stride that has no factor in common with their number."""
    count = len(blocks)
    if count == 0:
        return
    start = seed % count
    stride = (seed // count) % count or 1
    while math.gcd(stride, count) != 1:
        stride += 1
    for step in range(count):
        yield blocks[(start + step * stride) % count]
