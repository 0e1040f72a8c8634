"""The Go plugin and ours on the same pools: who releases what, and never one address twice.

Ranges: a /24 (one IPPool for both) and a /23 (512 addresses: we store it as
blocks, the Go plugin as one whole-range IPPool, which our daemons mirror
their entries into once it exists).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client

from whereabouts_py.core.shards import ONE_OBJECT_MAX
from whereabouts_py.store.kube import WHOLE_RANGE_ANNOTATION
from whereabouts_py_dev.runtime import Outcome

from .conftest import NODES, SideBySide

pytestmark = pytest.mark.kube

SMALL = "10.70.0.0/24"
LARGE = "10.71.0.0/23"
# How long a daemon trusts what it read of the Go plugin's whole-range object.
LEGACY_CACHE_S = 1.0


def test_the_large_range_is_stored_as_blocks() -> None:
    assert 512 > ONE_OBJECT_MAX >= 256


def _no_duplicates(side: SideBySide, cidr: str) -> None:
    doubled = {a: pods for a, pods in side.holders(cidr).items() if len(pods) > 1}
    assert doubled == {}, f"addresses held by two pods: {doubled}"


def _addresses(outcomes: dict[str, Outcome]) -> dict[str, str]:
    """pod -> address of every successful ADD."""
    found = {}
    for pod, outcome in outcomes.items():
        if outcome.ok:
            (address,) = outcome.addresses()
            found[pod] = address.split("/")[0]
    return found


def _run(jobs: dict[str, Callable[[], Outcome]], workers: int) -> dict[str, Outcome]:
    with ThreadPoolExecutor(workers) as pool:
        futures = {pod: pool.submit(job) for pod, job in jobs.items()}
        return {pod: future.result() for pod, future in futures.items()}


# --- 1. our DEL releases what the Go plugin made -----------------------------------------------


@pytest.mark.parametrize("cidr", [SMALL, LARGE])
def test_our_del_releases_go_made_entries_and_reservations(side: SideBySide, cidr: str) -> None:
    config = side.network({"range": cidr})
    pods = [f"go-{i}" for i in range(12)]
    made = _run({pod: (lambda pod=pod: side.go("ADD", config, pod)) for pod in pods}, workers=3)
    failed = {pod: o.stdout + o.stderr[-300:] for pod, o in made.items() if not o.ok}
    assert failed == {}
    reservations = side.reservations()
    assert len(reservations) == len(pods)
    # Written by the Go plugin: podref and ifname, no containerid.
    assert all("containerid" not in spec for spec in reservations.values())
    assert {spec["podref"] for spec in reservations.values()} == {
        f"{side.namespace}/{pod}" for pod in pods
    }

    gone = _run(
        {
            pod: (lambda pod=pod, i=i: side.ours("DEL", config, pod, node=NODES[i % 2]))
            for i, pod in enumerate(pods)
        },
        workers=4,
    )
    assert all(outcome.ok for outcome in gone.values()), [o.stdout for o in gone.values()]
    assert side.entries(cidr) == {}
    assert side.reservations() == {}
    # The Go plugin's own DEL afterwards finds nothing and succeeds.
    assert side.go("DEL", config, pods[0]).ok


# --- 2. the Go plugin's DEL of ours --------------------------------------------------------------


@pytest.mark.parametrize("overlapping", [True, False])
def test_go_del_releases_what_we_made_in_a_24(side: SideBySide, overlapping: bool) -> None:
    config = side.network({"range": SMALL, "enable_overlapping_ranges": overlapping})
    pods = [f"py-{i}" for i in range(10)]
    made = _run(
        {
            pod: (lambda pod=pod, i=i: side.ours("ADD", config, pod, node=NODES[i % 2]))
            for i, pod in enumerate(pods)
        },
        workers=5,
    )
    assert len(set(_addresses(made).values())) == len(pods)
    assert len(side.reservations()) == (len(pods) if overlapping else 0)
    for pod in pods:
        outcome = side.go("DEL", config, pod)
        assert outcome.ok, outcome.stdout + outcome.stderr[-300:]
    assert side.entries(SMALL) == {}
    assert side.reservations() == {}


def test_go_del_in_a_large_range_frees_only_the_mirror_and_we_repair_the_rest(
    side: SideBySide,
) -> None:
    """What the Go plugin can release of ours in a range stored as blocks.

    It reads only its whole-range IPPool: it removes our mirrored entry there
    and deletes our reservation by name, and cannot touch our block entry.
    `kubectl whereabouts check` reports the block entry; our reconciler
    releases it (its pod is gone) and keeps the live pods' entries.
    """
    config = side.network({"range": LARGE})
    first = side.go("ADD", config, "go-first")  # the Go plugin's whole-range object now exists
    assert first.ok, first.stdout + first.stderr[-300:]
    time.sleep(LEGACY_CACHE_S + 0.2)
    ours = [f"py-{i}" for i in range(6)]
    side.create_pods(["go-first", *ours])
    made = {pod: side.ours("ADD", config, pod, node=NODES[i % 2]) for i, pod in enumerate(ours)}
    addresses = _addresses(made)
    assert len(set(addresses.values())) == len(ours)
    whole = side.pools()["10.71.0.0-23"]["allocations"]
    mirrored = {holder["podref"] for holder in whole.values()}
    assert mirrored == {f"{side.namespace}/{pod}" for pod in ["go-first", *ours]}
    assert side.check()[0] == 0
    # A block entry and its mirror are one allocation.
    code, output = side.plugin("pools")
    assert code == 0
    assert [(row["range"], row["allocated"]) for row in json.loads(output)] == [(LARGE, 7)]

    # The runtime's DEL goes through the Go plugin for three of them (pods deleted).
    deleted = ours[:3]
    for pod in deleted:
        outcome = side.go("DEL", config, pod)
        assert outcome.ok, outcome.stdout
    side.delete_pods(deleted)
    whole = side.pools()["10.71.0.0-23"]["allocations"]
    assert {h["podref"] for h in whole.values()} == {
        f"{side.namespace}/{pod}" for pod in ["go-first", *ours[3:]]
    }
    assert not {addresses[pod] for pod in deleted} & set(side.reservations())
    # Our block entries stay behind: check finds them.
    code, output = side.check()
    assert code == 1
    hidden = {row["object"] for row in json.loads(output) if "Go plugin" in row["problem"]}
    assert hidden == {addresses[pod] for pod in deleted}

    report = side.sweep()
    assert sorted(item.entry.address for item in report.released) == sorted(
        addresses[pod] for pod in deleted
    )
    live = side.holders(LARGE)
    assert set(live) == {first.addresses()[0].split("/")[0], *(addresses[p] for p in ours[3:])}
    assert side.check()[0] == 0
    _no_duplicates(side, LARGE)


# --- 3. both at once, on the same pools ----------------------------------------------------------


@pytest.mark.parametrize(
    ("cidr", "overlapping"),
    [(SMALL, True), (SMALL, False), (LARGE, True), (LARGE, False)],
)
def test_concurrent_adds_and_cross_dels_never_hand_out_an_address_twice(
    side: SideBySide, cidr: str, overlapping: bool
) -> None:
    config = side.network({"range": cidr, "enable_overlapping_ranges": overlapping})
    if cidr == LARGE:
        # The Go plugin's object must exist before our daemons can mirror into it.
        assert side.go("ADD", config, "go-seed").ok
        time.sleep(LEGACY_CACHE_S + 0.2)
    go_pods = [f"go-{i}" for i in range(6)]
    our_pods = [f"py-{i}" for i in range(12)]
    jobs: dict[str, Callable[[], Outcome]] = {}
    for i in range(max(len(go_pods), len(our_pods))):
        if i < len(our_pods):
            pod = our_pods[i]
            jobs[pod] = lambda pod=pod, i=i: side.ours("ADD", config, pod, node=NODES[i % 2])
        if i < len(go_pods):
            pod = go_pods[i]
            jobs[pod] = lambda pod=pod: side.go("ADD", config, pod)
    made = _run(jobs, workers=6)
    addresses = _addresses(made)
    assert all(made[pod].ok for pod in our_pods), [made[p].stdout for p in our_pods]
    assert sum(made[pod].ok for pod in go_pods) >= len(go_pods) // 2
    assert len(set(addresses.values())) == len(addresses), addresses
    _no_duplicates(side, cidr)
    held = side.holders(cidr)
    for pod, address in addresses.items():
        assert f"{side.namespace}/{pod}" in held[address]

    # Cross DELs: ours of the Go plugin's, the Go plugin's of ours (/24) or ours (/23).
    dels: dict[str, Callable[[], Outcome]] = {}
    for i, pod in enumerate(go_pods):
        dels[pod] = lambda pod=pod, i=i: side.ours("DEL", config, pod, node=NODES[i % 2])
    for i, pod in enumerate(our_pods):
        if cidr == SMALL:
            dels[pod] = lambda pod=pod: side.go("DEL", config, pod)
        else:
            dels[pod] = lambda pod=pod, i=i: side.ours("DEL", config, pod, node=NODES[i % 2])
    gone = _run(dels, workers=6)
    assert all(outcome.ok for outcome in gone.values()), [o.stdout for o in gone.values()]
    seed = {f"{side.namespace}/go-seed"}
    assert {a: p for a, p in side.holders(cidr).items() if p != seed} == {}
    left = set(side.holders(cidr))
    assert len(left) == (1 if cidr == LARGE else 0)
    assert set(side.reservations()) == (left if overlapping else set())


# --- 4. the duplicate of the issue: forced with the Go plugin's sleep_for_race --------------------


def _during_go_sleep(
    side: SideBySide, config: dict[str, Any], pod: str, act: Callable[[], None]
) -> Outcome:
    """Run a Go ADD that sleeps 3 s between reading and writing; ``act`` in the middle."""
    result: dict[str, Outcome] = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("go", side.go("ADD", config, pod, sleep_for_race=3))
    )
    thread.start()
    time.sleep(1.5)  # the Go plugin has read its object and sleeps
    act()
    thread.join(60)
    return result["go"]


def test_unmirrored_block_entry_is_handed_out_again_by_go(side: SideBySide) -> None:
    """The hazard, reproduced: an entry of ours the Go plugin's object does not show.

    A writer takes the Go plugin's pick in its block meanwhile (as our daemons
    did before mirroring): the Go ADD fails on AlreadyExists, its entry stays,
    the runtime's DEL through the Go plugin deletes that writer's reservation,
    and the next Go ADD hands the address out again. `kubectl whereabouts
    check` reports the hidden entry, and our reconciler's sweep mirrors it.
    """
    from whereabouts_py.core.allocator import Allocation

    config = side.network({"range": LARGE})
    assert side.go("ADD", config, "go-seed").ok  # 10.71.0.1; the object exists
    store = side.cluster.store
    victim = Allocation("ctr-py-0", f"{side.namespace}/py-0", "net1", node="node-a")

    def take_in_a_block_without_mirroring() -> None:
        block = store.get_pool("10.71.0.0-24", "10.71.0.0/24")
        assert block.resource_version is None
        store.write_pool(block, {2: victim}, annotations={WHOLE_RANGE_ANNOTATION: LARGE})
        store.create_reservation("10.71.0.2", victim)

    failed = _during_go_sleep(side, config, "go-1", take_in_a_block_without_mirroring)
    assert not failed.ok
    assert "already exists" in (failed.stdout + failed.stderr).lower()
    assert side.go("DEL", config, "go-1").ok
    assert "10.71.0.2" not in side.reservations()  # deleted by name: ours
    code, output = side.check()
    assert code == 1
    assert {row["object"] for row in json.loads(output)} == {"10.71.0.2"}
    again = side.go("ADD", config, "go-2")
    assert again.addresses() == ["10.71.0.2/23"]
    assert side.holders(LARGE)["10.71.0.2"] == {
        f"{side.namespace}/py-0",
        f"{side.namespace}/go-2",
    }
    # Clean up the duplicate made on purpose.
    assert side.go("DEL", config, "go-2").ok
    report = side.sweep()  # no pods exist: everything is released
    assert report.failures == 0
    assert side.entries(LARGE) == {}


def test_forced_race_cannot_duplicate_while_our_daemons_mirror(side: SideBySide) -> None:
    """The same interleaving with our daemon: the Go plugin's write loses, it picks again."""
    config = side.network({"range": LARGE})
    assert side.go("ADD", config, "go-seed").ok
    time.sleep(LEGACY_CACHE_S + 0.2)
    ours: dict[str, Outcome] = {}

    def our_add() -> None:
        ours["py-0"] = side.ours("ADD", config, "py-0")

    raced = _during_go_sleep(side, config, "go-1", our_add)
    assert ours["py-0"].addresses() == ["10.71.0.2/23"]
    assert raced.ok, raced.stdout + raced.stderr[-500:]
    assert raced.addresses() != ["10.71.0.2/23"]
    # The runtime's DEL and another ADD through the Go plugin.
    assert side.go("DEL", config, "go-1").ok
    again = side.go("ADD", config, "go-2")
    assert again.ok
    assert again.addresses() != ["10.71.0.2/23"]
    _no_duplicates(side, LARGE)
    assert side.reservations()["10.71.0.2"]["podref"] == f"{side.namespace}/py-0"
    assert side.check()[0] == 0


def test_reconciler_mirrors_entries_made_before_the_go_object_existed(side: SideBySide) -> None:
    config = side.network({"range": LARGE, "enable_overlapping_ranges": False})
    made = [side.ours("ADD", config, f"py-{i}") for i in range(3)]
    assert [o.addresses() for o in made] == [["10.71.0.1/23"], ["10.71.0.2/23"], ["10.71.0.3/23"]]
    assert side.go("ADD", config, "go-0").addresses() == ["10.71.0.1/23"]  # hidden: taken again
    side.create_pods(["py-1", "py-2", "go-0"])
    code, output = side.check()
    assert code == 1
    rows = json.loads(output)
    assert {row["object"] for row in rows if "Go plugin" in row["problem"]} == {
        "10.71.0.2",
        "10.71.0.3",
    }
    assert {row["object"] for row in rows if row["problem"] == "address held twice"} == {
        "10.71.0.1"
    }
    report = side.sweep()
    assert sorted(report.mirrored) == ["10.71.0.2", "10.71.0.3"]
    # py-0 has no pod: its block entry is released; go-0 keeps 10.71.0.1.
    assert [item.entry.address for item in report.released] == ["10.71.0.1"]
    assert side.check()[0] == 0
    nxt = side.go("ADD", config, "go-1")
    assert nxt.addresses() == ["10.71.0.4/23"]
    _no_duplicates(side, LARGE)


def test_an_empty_whole_range_object_made_first_keeps_the_go_plugin_out_of_our_addresses(
    side: SideBySide,
) -> None:
    """The documented preparation for a range stored as blocks, reservations off."""
    config = side.network({"range": LARGE, "enable_overlapping_ranges": False})
    empty = {
        "apiVersion": "whereabouts.cni.cncf.io/v1alpha1",
        "kind": "IPPool",
        "metadata": {"name": "10.71.0.0-23", "namespace": side.namespace},
        "spec": {"range": LARGE, "allocations": {}},
    }
    side.plane.kubectl("apply", "-f", "-", input_text=json.dumps(empty))
    ours = {f"py-{i}": side.ours("ADD", config, f"py-{i}", node=NODES[i % 2]) for i in range(4)}
    theirs = {f"go-{i}": side.go("ADD", config, f"go-{i}") for i in range(4)}
    addresses = _addresses({**ours, **theirs})
    assert len(addresses) == 8
    assert len(set(addresses.values())) == 8, addresses
    _no_duplicates(side, LARGE)
    code, output = side.check()
    assert code == 0, output


def test_a_pod_name_coming_back_through_ours_does_not_take_what_go_gave_away(
    side: SideBySide,
) -> None:
    """Go's DEL of ours leaves our block entry; the Go plugin reuses the address."""
    config = side.network({"range": LARGE})
    assert side.go("ADD", config, "go-seed").ok
    time.sleep(LEGACY_CACHE_S + 0.2)
    first = side.ours("ADD", config, "sts-0")
    assert first.addresses() == ["10.71.0.2/23"]
    assert side.go("DEL", config, "sts-0").ok  # mirror and reservation gone, block entry left
    reused = side.go("ADD", config, "go-new")
    assert reused.addresses() == ["10.71.0.2/23"]
    back = side.ours("ADD", config, "sts-0", container="ctr-sts-0-b")
    assert back.ok, back.stdout
    assert back.addresses() != ["10.71.0.2/23"]
    _no_duplicates(side, LARGE)
    assert side.check()[0] == 0


def test_the_go_object_deleted_after_the_migration_is_not_created_again(
    side: SideBySide,
) -> None:
    config = side.network({"range": LARGE})
    assert side.go("ADD", config, "go-seed").ok
    assert side.ours("DEL", config, "go-seed").ok  # the last pod the Go plugin made
    time.sleep(LEGACY_CACHE_S + 0.2)
    objects = client.CustomObjectsApi(side.cluster.core.api_client)
    assert side.ours("ADD", config, "py-0").ok  # mirrored: the object still exists
    whole = objects.get_namespaced_custom_object(
        "whereabouts.cni.cncf.io", "v1alpha1", side.namespace, "ippools", "10.71.0.0-23"
    )
    assert set(whole["spec"]["allocations"]) == {"1"}
    objects.delete_namespaced_custom_object(
        "whereabouts.cni.cncf.io", "v1alpha1", side.namespace, "ippools", "10.71.0.0-23"
    )
    # Within the daemon's cache of the object and after it: neither ADD nor DEL
    # brings it back.
    assert side.ours("ADD", config, "py-1").ok
    time.sleep(LEGACY_CACHE_S + 0.2)
    assert side.ours("ADD", config, "py-2").ok
    assert side.ours("DEL", config, "py-0").ok
    assert "10.71.0.0-23" not in side.pools()
    assert set(side.holders(LARGE)) == {"10.71.0.2", "10.71.0.3"}
    assert side.check()[0] == 0


def test_overlapping_ranges_written_by_both_at_once_are_unsafe_and_check_says_so(
    side: SideBySide,
) -> None:
    """The documented unsafe set-up: across ranges only reservations decide.

    The Go plugin serves 10.72.0.0/24, ours 10.72.0.0/25 (another network
    with the same addresses). Its ADD fails on the reservation we created
    meanwhile, the runtime's DEL through it deletes our reservation by name,
    and its next ADD gives our address to a second pod. `kubectl whereabouts
    check` reports our entry's reservation as held by another attachment.
    """
    theirs = side.network({"range": "10.72.0.0/24"}, name="wide")
    ours = side.network({"range": "10.72.0.0/25"}, name="narrow")
    made: dict[str, Outcome] = {}
    failed = _during_go_sleep(
        side, theirs, "go-1", lambda: made.setdefault("py", side.ours("ADD", ours, "py-0"))
    )
    assert made["py"].addresses() == ["10.72.0.1/25"]
    assert not failed.ok
    assert side.go("DEL", theirs, "go-1").ok
    assert "10.72.0.1" not in side.reservations()
    again = side.go("ADD", theirs, "go-2")
    assert again.addresses() == ["10.72.0.1/24"]
    code, output = side.check()
    assert code == 1
    rows = json.loads(output)
    assert {(row["problem"], row["object"]) for row in rows} == {
        ("reservation held by another attachment", "10.72.0.1"),
        ("address held twice", "10.72.0.1"),
    }
    assert side.go("DEL", theirs, "go-2").ok
    assert side.ours("DEL", ours, "py-0").ok
