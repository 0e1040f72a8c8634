"""Which block a node tries when the lowest blocks are held by other nodes (daemon.placement)."""

from __future__ import annotations

from whereabouts_py.core.addresses import parse_range
from whereabouts_py.core.allocator import Allocation
from whereabouts_py.core.shards import Shard
from whereabouts_py.daemon.placement import Placement

OWNER = Allocation("ctr-new", "default/new-pod", "net1")
RNG, _ = parse_range("10.80.0.0/16")  # 1,024 blocks of 64


def first_claimed(node: str, held: set[int]) -> tuple[int, int]:
    """The block ``node`` gets, and how many Leases it asked for to get it."""
    asked: list[int] = []

    def claim(shard: Shard) -> bool:
        asked.append(shard.index)
        return shard.index not in held

    block = next(Placement(list, node).candidates("range", RNG, OWNER, claim)).index
    return block, len(asked)


def test_alone_a_node_takes_the_lowest_block() -> None:
    assert first_claimed("node-a", set()) == (0, 1)


def test_behind_held_blocks_a_node_goes_on_from_a_place_of_its_own() -> None:
    held = set(range(100))  # a hundred nodes have their blocks already
    got = {node: first_claimed(node, held) for node in (f"node-{i}" for i in range(20))}
    for block, asked in got.values():
        assert block not in held
        assert asked <= 3  # not one Lease read per block held by others
    assert len({block for block, _ in got.values()}) >= 15  # they spread out


def test_every_block_is_still_tried_once() -> None:
    tried: list[int] = []

    def claim(shard: Shard) -> bool:
        tried.append(shard.index)
        return False  # all held elsewhere: then every block is shared

    shards = list(Placement(list, "node-x").candidates("range", RNG, OWNER, claim))
    assert sorted(tried) == list(range(1024))
    assert sorted(shard.index for shard in shards) == list(range(1024))
