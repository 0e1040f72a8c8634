"""The work of finding a free address is bounded by what is stored, not by the address space.

Two kinds of checks:

* properties on small ranges, where a brute-force walk over every address is
  the reference: the lowest free address, the blocks a large range is stored
  in, and the block the daemon tries first all agree with it;
* large ranges with large exclusions (an IPv6 /64 without its first /80, a
  /30 without its first /32, an IPv4 /8 without its lower /9), which must
  answer within a small CPU budget. The budget is process CPU time, measured
  by the kernel (ITIMER_VIRTUAL), so a busy machine does not make it flaky; it
  is generous (seconds for what takes microseconds), and without the interval
  arithmetic these walks would take hours to centuries.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType

import netaddr
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whereabouts_py.core.addresses import AddressRange, parse_range
from whereabouts_py.core.allocator import Allocation
from whereabouts_py.core.shards import SHARD_BITS, Shard, is_sharded, shard_indexes, shards
from whereabouts_py.daemon import deadline
from whereabouts_py.daemon.deadline import RequestAbandonedError
from whereabouts_py.daemon.placement import Placement
from whereabouts_py.store.kube import PoolSnapshot

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)
CPU_BUDGET_S = 2.0
OWNER = Allocation("ctr-new", "default/new-pod", "net1")
Claim = Callable[[Shard], bool]


class OverBudgetError(Exception):
    """The code under test used more CPU than the budget."""


@contextlib.contextmanager
def cpu_budget(seconds: float = CPU_BUDGET_S) -> Iterator[None]:
    """Fail (instead of hanging) when the block uses more than ``seconds`` of CPU."""

    def expired(_signum: int, _frame: FrameType | None) -> None:
        raise OverBudgetError(f"used more than {seconds:g}s of CPU")

    previous = signal.signal(signal.SIGVTALRM, expired)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)


# --- the brute-force reference --------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """A range's configuration, kept to judge the parsed range independently."""

    network: netaddr.IPNetwork
    exclude: tuple[str, ...]
    gateway: netaddr.IPAddress | None
    range_start: str | None
    range_end: str | None

    def parse(self) -> AddressRange:
        rng, _ = parse_range(
            str(self.network),
            range_start=self.range_start,
            range_end=self.range_end,
            exclude=list(self.exclude),
            gateway=self.gateway,
        )
        return rng


def assignable_by_walk(config: Config, rng: AddressRange) -> list[int]:
    """Every assignable offset, found by testing each address of the network."""
    network = config.network
    excluded = [_excluded_network(text, network.version) for text in config.exclude]
    # On plain integers: every address of every excluded block that lies in the network.
    base, end = int(network.first), int(network.last)
    excluded_values: set[int] = set()
    for block in excluded:
        excluded_values.update(range(max(int(block.first), base), min(int(block.last), end) + 1))
    gateway = int(config.gateway) if config.gateway is not None else None
    low, high = rng.first, rng.last
    found = []
    for offset in range(1, int(network.size) - 1):  # never the network or last address
        value = base + offset
        if not low <= value <= high:  # range_start/range_end as parsed
            continue
        if value == gateway or value in excluded_values:
            continue
        found.append(offset)
    return found


def _excluded_network(text: str, version: int) -> netaddr.IPNetwork:
    if "/" in text:
        return netaddr.IPNetwork(text)
    return netaddr.IPNetwork(f"{text}/{32 if version == 4 else 128}")


@st.composite
def configs(draw: st.DrawFn) -> Config:
    """IPv4 or IPv6 ranges of 4 to 4096 addresses (so both one-object and blocks)."""
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    prefix = draw(st.integers(min_value=bits - 12, max_value=bits - 2))
    base = 0x0A400000 if version == 4 else 0xFD00 << 112
    network = netaddr.IPNetwork(f"{netaddr.IPAddress(base, version)}/{prefix}")
    size = int(network.size)

    def address(offset: int) -> str:
        return str(netaddr.IPAddress(int(network.first) + offset, version))

    # Offsets a little outside the network too: excludes that only overlap it.
    offsets = st.integers(min_value=0, max_value=size - 1)
    near = st.integers(min_value=-size, max_value=2 * size - 1).map(
        lambda o: str(netaddr.IPAddress((int(network.first) + o) % (1 << bits), version))
    )
    cidr = st.tuples(offsets, st.integers(min_value=prefix - 2, max_value=bits)).map(
        lambda pair: str(netaddr.IPNetwork(f"{address(pair[0])}/{pair[1]}").cidr)
    )
    exclude = draw(st.lists(cidr | near | offsets.map(address), max_size=8))
    gateway = draw(st.none() | offsets.map(lambda o: netaddr.IPAddress(address(o))))
    range_start = draw(st.none() | offsets.map(address))
    range_end = draw(st.none() | offsets.map(address))
    return Config(network, tuple(exclude), gateway, range_start, range_end)


def snapshots_of(rng: AddressRange, held: set[int]) -> list[PoolSnapshot]:
    """What a LIST of the range's IPPools returns when ``held`` are allocated."""
    by_block: dict[int, dict[int, Allocation]] = {}
    for offset in held:
        block = offset >> SHARD_BITS
        by_block.setdefault(block, {})[offset - (block << SHARD_BITS)] = Allocation(
            f"ctr-{offset}", f"default/pod-{offset}", "net1"
        )
    found = []
    for block, allocations in by_block.items():
        first = netaddr.IPAddress(int(rng.network.first) + (block << SHARD_BITS), rng.version)
        cidr = f"{first}/{(32 if rng.version == 4 else 128) - SHARD_BITS}"
        found.append(PoolSnapshot(f"pool-{block}", cidr, allocations, "1"))
    return found


def first_free_through_blocks(blocks: Iterator[Shard], held: set[int]) -> int | None:
    """How the daemon finds an address: the lowest free one of the first block with room."""
    for shard in blocks:
        found = shard.window.lowest_free(held)
        if found is not None:
            return found
    return None


# --- properties on small ranges -------------------------------------------------------------


@PROPERTY_SETTINGS
@given(config=configs(), data=st.data())
def test_lowest_free_equals_the_brute_force_walk(config: Config, data: st.DataObject) -> None:
    rng = config.parse()
    assignable = assignable_by_walk(config, rng)
    held: set[int] = data.draw(
        st.sets(st.sampled_from(assignable), max_size=len(assignable))
        if assignable
        else st.just(set())
    )
    free = [offset for offset in assignable if offset not in held]
    assert rng.capacity() == len(assignable)
    assert list(rng.iter_free(held)) == free
    assert rng.lowest_free(held) == (free[0] if free else None)
    # The runs of assignable addresses cover exactly the assignable ones.
    covered = [o for low, high in rng.stretches() for o in range(low, high + 1)]
    assert covered == assignable


@PROPERTY_SETTINGS
@given(config=configs(), data=st.data())
def test_blocks_are_exactly_those_holding_assignable_addresses(
    config: Config, data: st.DataObject
) -> None:
    rng = config.parse()
    assignable = assignable_by_walk(config, rng)
    if not is_sharded(rng):
        assert list(shard_indexes(rng)) == [0]
        return
    expected = sorted({offset >> SHARD_BITS for offset in assignable})
    assert list(shard_indexes(rng)) == expected
    blocks = list(shards(rng))
    assert [shard.index for shard in blocks] == expected
    by_block: dict[int, list[int]] = {}
    for offset in assignable:
        by_block.setdefault(offset >> SHARD_BITS, []).append(offset)
    for shard in blocks:  # each block's window is the range clipped to the block
        inside = by_block.get(shard.index, [])
        assert shard.window.capacity() == len(inside)
        assert list(shard.window.iter_free(set())) == inside
    start = data.draw(st.integers(min_value=0, max_value=(int(rng.network.size) >> SHARD_BITS)))
    assert list(shard_indexes(rng, start)) == [i for i in expected if i >= start]


@PROPERTY_SETTINGS
@given(config=configs(), data=st.data())
def test_the_daemon_finds_the_lowest_free_address_of_a_fresh_range(
    config: Config, data: st.DataObject
) -> None:
    """A daemon that has not written yet: its first try is the lowest free address's block."""
    rng = config.parse()
    assignable = assignable_by_walk(config, rng)
    held: set[int] = data.draw(
        st.sets(st.sampled_from(assignable), max_size=len(assignable))
        if assignable
        else st.just(set())
    )
    free = [offset for offset in assignable if offset not in held]
    expected = free[0] if free else None
    assert first_free_through_blocks(shards(rng), held) == expected

    placement = Placement(lambda: snapshots_of(rng, held))
    claims: list[int] = []

    def claim(shard: Shard) -> bool:
        claims.append(shard.index)
        return True

    candidates = placement.candidates("range", rng, OWNER, claim)
    if expected is None:
        assert first_free_through_blocks(candidates, held) is None
        return
    first = next(candidates)
    # Full blocks are known from the LIST: the first block tried has the address.
    assert first.window.lowest_free(held) == expected
    assert len(claims) <= 1  # one Lease asked for, not one per block walked past


# --- large ranges with large exclusions -----------------------------------------------------

LARGE = [
    ("fd00::/64", ["fd00::/80"], "fd00::1:0:0:0"),
    ("2001:db8::/30", ["2001:db8::/32"], "2001:db9::"),
    ("10.0.0.0/8", ["10.0.0.0/9"], "10.128.0.0"),
    # The top of the range is excluded: the last address comes at once too.
    (
        "fd00:1::/64",
        ["fd00:1::/65", "fd00:1:0:0:8000::/66", "fd00:1:0:0:c000::/67"],
        "fd00:1:0:0:e000::",
    ),
    (
        "2001:db8::/32",
        ["2001:db8::/33", "2001:db8:8000::/34", "2001:db8:c000::1"],
        "2001:db8:c000::",
    ),
]


@pytest.mark.parametrize(("cidr", "exclude", "first"), LARGE)
def test_a_large_exclude_costs_no_more_than_a_small_one(
    cidr: str, exclude: list[str], first: str
) -> None:
    with cpu_budget():
        rng, _ = parse_range(cidr, exclude=exclude)
        block = next(shards(rng))
        offset = block.window.lowest_free(set())
        assert offset is not None
        assert str(rng.address_at(offset)) == first
        placement = Placement(list)
        tried = next(placement.candidates("range", rng, OWNER, lambda shard: True))
        assert tried.index == block.index
        # A daemon that finds the first blocks full moves on at the same cost.
        for _ in range(3):
            placement.index("range", rng).mark_full(tried.index)
            following = next(placement.candidates("range", rng, OWNER, lambda shard: True))
            assert following.index > tried.index
            tried = following


def test_many_scattered_excludes_cost_a_bisection_per_block() -> None:
    """4,000 single-address excludes in a /16: every block meets some."""
    excludes = [str(netaddr.IPAddress(0x0A500000 + 16 * i + 3)) for i in range(4000)]
    with cpu_budget():
        rng, _ = parse_range("10.80.0.0/16", exclude=excludes)
        blocks = list(shards(rng))
        assert len(blocks) == 1024
        assert sum(block.window.capacity() for block in blocks) == rng.capacity()
        assert rng.capacity() == 65534 - 4000


@PROPERTY_SETTINGS
@given(data=st.data())
def test_large_ranges_answer_within_the_budget(data: st.DataObject) -> None:
    """Random huge exclusions in an IPv6 /32-/64: the first free address, arithmetically."""
    prefix = data.draw(st.integers(min_value=32, max_value=64))
    network = netaddr.IPNetwork(f"fd00:abcd::/{prefix}").cidr
    size = int(network.size)
    excluded = data.draw(
        st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=size - 1),
                st.integers(min_value=prefix + 1, max_value=128),
            ),
            max_size=6,
        )
    )
    exclude = [
        str(netaddr.IPNetwork(f"{netaddr.IPAddress(int(network.first) + o, 6)}/{p}").cidr)
        for o, p in excluded
    ]
    blocks = [_excluded_network(text, 6) for text in exclude]

    def assignable(value: int) -> bool:
        return int(network.first) < value < int(network.last) and not any(
            int(b.first) <= value <= int(b.last) for b in blocks
        )

    # The lowest assignable address is the network's second or just after an exclude.
    points = [int(network.first) + 1] + [int(b.last) + 1 for b in blocks]
    expected = min((p for p in points if assignable(p)), default=None)
    with cpu_budget():
        rng, _ = parse_range(str(network), exclude=exclude)
        found = first_free_through_blocks(shards(rng), set())
        first = next(Placement(list).candidates("range", rng, OWNER, lambda shard: True), None)
    if expected is None:
        assert found is None
        return
    assert found is not None
    assert int(rng.network.first) + found == expected
    assert first is not None and first.index == found >> SHARD_BITS


# --- work for a client that is gone stops ---------------------------------------------------


def busy_everywhere(hang_up_after: int, peer: socket.socket) -> tuple[list[int], Claim]:
    """A claim that finds every block held by another node; the shim hangs up after N asks."""
    asked: list[int] = []

    def claim(shard: Shard) -> bool:
        asked.append(shard.index)
        if len(asked) == hang_up_after:
            peer.close()
        return False

    return asked, claim


def test_the_walk_over_blocks_stops_when_the_shim_hangs_up() -> None:
    rng, _ = parse_range("10.90.0.0/16")  # 1,024 blocks, all held by other nodes
    served, shim = socket.socketpair()
    with served, deadline.serving(served):
        asked, claim = busy_everywhere(5, shim)
        walk = Placement(list).candidates("range", rng, OWNER, claim)
        with pytest.raises(RequestAbandonedError, match="hung up"):
            list(walk)
    assert len(asked) == 5  # not one more Lease asked for after the hang-up
    assert RequestAbandonedError("x").code == 11


def test_a_shim_that_only_half_closes_is_still_waiting() -> None:
    rng, _ = parse_range("10.90.0.0/22")
    served, shim = socket.socketpair()
    with served, shim, deadline.serving(served):
        shim.shutdown(socket.SHUT_WR)
        blocks = list(Placement(list).candidates("range", rng, OWNER, lambda shard: True))
    assert len(blocks) == 16


def test_the_walk_stops_when_the_request_runs_out_of_time() -> None:
    rng, _ = parse_range("fd00:5::/64")
    with deadline.serving(None, budget_s=0.0):
        time.sleep(0.01)
        with pytest.raises(RequestAbandonedError, match="out of time"):
            next(Placement(list).candidates("range", rng, OWNER, lambda shard: True))
    # Outside a request (a batch writer's thread) nothing is ever interrupted.
    assert deadline.current() is None
    first = next(Placement(list).candidates("range", rng, OWNER, lambda shard: True))
    assert first.cidr == "fd00:5::/122"
