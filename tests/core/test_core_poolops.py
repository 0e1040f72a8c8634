"""The pool operations the daemon composes: pure, never mutating, safe to re-run."""

from __future__ import annotations

from whereabouts_py.core.addresses import parse_range
from whereabouts_py.core.allocator import Allocation
from whereabouts_py.core.ownership import disruption_targeted
from whereabouts_py.core.poolops import (
    mirror_offset,
    on_shard,
    pool_size,
    release_offset,
    sweep,
)
from whereabouts_py.core.shards import SHARD_SIZE, shard_of

OURS = Allocation("ctr-1", "default/web-0", "net1", node="node-a", pod_uid="uid-1")
NEWER_SANDBOX = Allocation("ctr-2", "default/web-0", "net1", node="node-a", pod_uid="uid-1")
OTHER_POD = Allocation("ctr-3", "default/web-1", "net1", node="node-b")
GO_ENTRY = Allocation("ctr-9", "default/web-0", "net1")  # the Go plugin's, same pod


def test_release_offset_frees_only_what_this_container_still_holds() -> None:
    pool = {3: OURS, 4: OTHER_POD}
    remaining, freed = release_offset(3, OURS)(pool)
    assert (remaining, freed) == ({4: OTHER_POD}, True)
    assert pool == {3: OURS, 4: OTHER_POD}  # the input is untouched
    # A newer sandbox took the entry over: the old one's rollback leaves it.
    assert release_offset(3, OURS)({3: NEWER_SANDBOX}) == ({3: NEWER_SANDBOX}, False)
    assert release_offset(4, OURS)(pool) == (pool, False)
    assert release_offset(5, OURS)(pool) == (pool, False)


def test_mirror_offset_records_the_owner_unless_another_attachment_holds_it() -> None:
    assert mirror_offset(7, OURS)({}) == ({7: OURS}, True)
    assert mirror_offset(7, OURS)({7: OURS}) == ({7: OURS}, True)
    # The Go plugin's entry of the same pod's interface is ours to take over.
    assert mirror_offset(7, OURS)({7: GO_ENTRY}) == ({7: OURS}, True)
    # Another pod holds it there: nothing changes, and the answer is no.
    held = {7: OTHER_POD}
    assert mirror_offset(7, OURS)(held) == ({7: OTHER_POD}, False)
    assert held == {7: OTHER_POD}


def test_sweep_frees_exactly_the_unchanged_stale_entries() -> None:
    pool = {1: OURS, 2: OTHER_POD, 3: GO_ENTRY}
    remaining, count = sweep({OURS, GO_ENTRY})(pool)
    assert (remaining, count) == ({2: OTHER_POD}, 2)
    # Rewritten since it was judged (a new sandbox): it stays.
    assert sweep({OURS})({1: NEWER_SANDBOX}) == ({1: NEWER_SANDBOX}, 0)
    assert sweep(set())(pool) == (pool, 0)
    assert pool == {1: OURS, 2: OTHER_POD, 3: GO_ENTRY}


def test_on_shard_translates_block_keys_to_whole_range_offsets() -> None:
    rng, _ = parse_range("10.64.0.0/20")
    block = shard_of(rng, 3 * SHARD_SIZE + 5)
    assert block.base == 3 * SHARD_SIZE
    seen: list[dict[int, Allocation]] = []

    def take(allocations: dict[int, Allocation]) -> tuple[dict[int, Allocation], int]:
        seen.append(dict(allocations))
        return {**allocations, block.base + 9: OURS}, block.base + 9

    updated, offset = on_shard(block, take)({5: OTHER_POD})
    assert seen == [{block.base + 5: OTHER_POD}]  # the operation saw whole-range offsets
    assert offset == block.base + 9
    assert updated == {5: OTHER_POD, 9: OURS}  # stored with the block's own keys
    # With block keys, release_offset of a whole-range offset frees the right entry.
    assert on_shard(block, release_offset(block.base + 9, OURS))(updated) == (
        {5: OTHER_POD},
        True,
    )
    # The first block (and an unsharded range) needs no translation.
    first = shard_of(rng, 1)
    assert first.base == 0 and on_shard(first, take) is take


def test_pool_size_is_the_range_less_its_network_and_last_address() -> None:
    assert pool_size("10.0.0.0/24") == 254
    assert pool_size("10.0.0.0/30") == 2
    assert pool_size("10.0.0.0/31") == 0
    assert pool_size("10.0.0.0/32") == 0
    assert pool_size("fd00::/120") == 254
    assert pool_size("not a range") == 0
    # A block loses the whole range's edges only where they fall in it.
    assert pool_size("10.240.0.0/26", "10.240.0.0/22") == 63
    assert pool_size("10.240.1.0/26", "10.240.0.0/22") == 64
    assert pool_size("10.240.3.192/26", "10.240.0.0/22") == 63


def test_disruption_target_is_read_from_the_pod_conditions() -> None:
    marked = {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
    assert disruption_targeted([{"type": "Ready", "status": "True"}, marked])
    assert not disruption_targeted([{**marked, "status": "False"}])
    assert not disruption_targeted([{"type": "Ready", "status": "True"}])
    for malformed in (None, {}, "DisruptionTarget", ["DisruptionTarget"], [None]):
        assert not disruption_targeted(malformed)
