"""How ranges map onto IPPool objects (pure values)."""

from __future__ import annotations

import itertools

from whereabouts_py.core.addresses import parse_range
from whereabouts_py.core.shards import (
    SHARD_SIZE,
    is_sharded,
    shard_for_cidr,
    shard_of,
    shards,
    whole_pool_name,
)


def test_a_slash_24_is_one_object_named_as_go_names_it() -> None:
    rng, _ = parse_range("192.168.2.0/24")
    assert not is_sharded(rng)
    (only,) = list(shards(rng))
    assert only.name(None) == "192.168.2.0-24"
    assert only.base == 0
    assert only.window == rng


def test_a_slash_23_is_eight_blocks_each_a_go_format_pool_of_its_own_slash_26() -> None:
    rng, _ = parse_range("10.1.0.0/23")
    blocks = list(shards(rng))
    assert len(blocks) == 8
    assert [b.cidr for b in blocks][:5] == [
        "10.1.0.0/26",
        "10.1.0.64/26",
        "10.1.0.128/26",
        "10.1.0.192/26",
        "10.1.1.0/26",
    ]
    assert [b.name("blue") for b in blocks][:2] == ["blue-10.1.0.0-26", "blue-10.1.0.64-26"]
    # Inside a /23, x.x.0.255 and x.x.1.0 are ordinary addresses.
    assert blocks[3].window.capacity() == 64
    assert blocks[4].window.capacity() == 64
    assert blocks[0].window.capacity() == 63  # not the network address
    assert blocks[7].window.capacity() == 63  # not the broadcast address
    assert sum(b.window.capacity() for b in blocks) == rng.capacity() == 510
    assert whole_pool_name(rng, None) == "10.1.0.0-23"


def test_offsets_translate_between_block_keys_and_the_whole_range() -> None:
    rng, _ = parse_range("10.1.0.0/22")
    block = shard_of(rng, 300)
    assert block.cidr == "10.1.1.0/26"
    assert block.to_local(300) == 44
    assert block.to_whole(44) == 300
    assert str(rng.address_at(block.to_whole(44))) == "10.1.1.44"
    assert shard_for_cidr(rng, "10.1.1.0/26") == block
    assert shard_for_cidr(rng, "10.1.1.0/25") is None
    assert shard_for_cidr(rng, "10.2.0.0/26") is None


def test_range_start_and_end_limit_the_blocks() -> None:
    rng, _ = parse_range("10.1.0.0/16", range_start="10.1.5.10", range_end="10.1.6.20")
    blocks = list(shards(rng))
    assert [b.cidr for b in blocks] == [
        "10.1.5.0/26",
        "10.1.5.64/26",
        "10.1.5.128/26",
        "10.1.5.192/26",
        "10.1.6.0/26",
    ]
    assert blocks[0].window.capacity() == 54
    assert blocks[4].window.capacity() == 21


def test_ipv6_slash_64_blocks_are_lazy() -> None:
    rng, _ = parse_range("fd00:1::/64")
    first_three = list(itertools.islice(shards(rng), 3))
    assert [b.cidr for b in first_three] == ["fd00:1::/122", "fd00:1::40/122", "fd00:1::80/122"]
    assert first_three[0].name(None) == "fd00-1---122"
    assert first_three[1].base == SHARD_SIZE
