"""How a range's allocations are spread over IPPool objects.

A range of at most ``ONE_OBJECT_MAX`` (256) addresses (an IPv4 /24 or
smaller, an IPv6 /120 or smaller: what most IPv4 NADs use) lives in one
IPPool, named and keyed exactly as the Go project does. A larger range is
stored as aligned blocks of ``SHARD_SIZE`` (64) addresses, each an ordinary
IPPool of its own sub-CIDR (an IPv4 /26 or IPv6 /122: ``spec.range`` is the
block, keys are offsets from the block's first address), created only when
an address in it is first handed out.

Why: the apiserver's cost of writing an IPPool grows with its number of
entries (about 0.15-0.25 ms per entry per write on a 2-core machine, mostly
managed-fields bookkeeping), and etcd refuses objects over about 1.5 MiB, so
a /16 with 60,000 live allocations cannot be one object. Blocks keep every
write small and let different nodes write different blocks in parallel.

Blocks stay compatible: each is a valid Go-format IPPool, and a NAD whose
range is exactly that block reads and writes the same object with the same
keys. The Go project reads only the whole-range object of a large range; it
sees our addresses through their OverlappingRangeIPReservations, which are on
by default (see docs/architecture.md for the migration notes).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import netaddr

from whereabouts_py.core.addresses import AddressRange
from whereabouts_py.core.codec import pool_name

# Ranges of up to this many addresses are one object, exactly as in Go.
ONE_OBJECT_MAX = 256
# Larger ranges are stored in aligned blocks of this many addresses.
SHARD_BITS = 6
SHARD_SIZE = 1 << SHARD_BITS


@dataclass(frozen=True)
class Shard:
    """One IPPool object of a range: the block it stores and how to reach it."""

    whole: AddressRange  # the configured range
    network: netaddr.IPNetwork  # the block's CIDR (the whole network when unsharded)
    base: int  # offset of the block's first address within the whole range's network
    window: AddressRange  # the whole range clipped to this block (offsets of the whole)

    @property
    def cidr(self) -> str:
        return str(self.network)

    @property
    def index(self) -> int:
        return self.base >> SHARD_BITS if is_sharded(self.whole) else 0

    def name(self, network_name: str | None) -> str:
        return pool_name(self.network, network_name)

    def to_whole(self, local: int) -> int:
        """A key of this IPPool -> an offset of the whole range."""
        return self.base + local

    def to_local(self, offset: int) -> int:
        """An offset of the whole range -> a key of this IPPool."""
        return offset - self.base


def _width(rng: AddressRange) -> int:
    return 32 if rng.version == 4 else 128


def is_sharded(rng: AddressRange) -> bool:
    return int(rng.network.size) > ONE_OBJECT_MAX


def _block(rng: AddressRange, index: int) -> Shard:
    base = index << SHARD_BITS
    first_address = int(rng.network.first) + base
    prefix = _width(rng) - SHARD_BITS
    network = netaddr.IPNetwork(f"{netaddr.IPAddress(first_address, rng.version)}/{prefix}")
    window = rng.clipped(first_address, first_address + SHARD_SIZE - 1)
    return Shard(rng, network, base, window)


def shard_of(rng: AddressRange, offset: int) -> Shard:
    """The shard that stores ``offset`` (an offset of the whole range)."""
    if not is_sharded(rng):
        return Shard(rng, rng.network, 0, rng)
    return _block(rng, offset >> SHARD_BITS)


def shard_indexes(rng: AddressRange, start_index: int = 0) -> Iterator[int]:
    """Indexes of the blocks holding assignable addresses, ascending, lazily.

    Blocks wholly inside an excluded interval are jumped over, not visited:
    the blocks come from the range's runs of assignable addresses, so finding
    the first block after a /32 excluded from an IPv6 /30 is one step, not
    2**90. A one-object range has the single index 0.
    """
    if not is_sharded(rng):
        if start_index == 0:
            yield 0
        return
    next_index = start_index
    for low, high in rng.stretches(start_index << SHARD_BITS):
        first_index = max(low >> SHARD_BITS, next_index)
        last_index = high >> SHARD_BITS
        yield from range(first_index, last_index + 1)
        next_index = last_index + 1


def shards(rng: AddressRange, start_index: int = 0) -> Iterator[Shard]:
    """Shards holding assignable addresses, lowest first, lazily (a /64 has 2**58)."""
    if not is_sharded(rng):
        if start_index == 0:
            yield Shard(rng, rng.network, 0, rng)
        return
    for index in shard_indexes(rng, start_index):
        yield _block(rng, index)


def shard_for_cidr(rng: AddressRange, cidr: str) -> Shard | None:
    """The block of ``rng`` that an IPPool with ``spec.range == cidr`` stores, if any."""
    if not is_sharded(rng):
        return None
    try:
        network = netaddr.IPNetwork(cidr)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None
    if (
        network.version != rng.version
        or network.prefixlen != _width(rng) - SHARD_BITS
        or network not in rng.network
    ):
        return None
    return _block(rng, (int(network.first) - int(rng.network.first)) >> SHARD_BITS)


def whole_pool_name(rng: AddressRange, network_name: str | None) -> str:
    """The Go project's name for the whole range (read for compatibility)."""
    return pool_name(rng.network, network_name)
