"""The reconciler's decisions as pure functions: which entries go, which stay, what to repair."""

from __future__ import annotations

import json

import pytest

from whereabouts_py.core.allocator import Allocation
from whereabouts_py.core.ownership import (
    PodState,
    Verdict,
    address_at,
    entries_of,
    judge,
    network_name_of,
    network_status_of,
    parse_network_status,
    plan_sweep,
)
from whereabouts_py.reconciler.collector import FirstSeen, pool_size
from whereabouts_py.reconciler.operator import releases_addresses

WEB = Allocation("ctr-1", "shop/web-0", "net1", node="n1", pod_uid="uid-1")
GO_WRITTEN = Allocation("ctr-9", "shop/legacy", "net1")  # no pod UID, as the Go project writes


def pod(
    name: str = "web-0",
    uid: str = "uid-1",
    *,
    phase: str = "Running",
    disrupted: bool = False,
    stopped: bool = False,
    listed: set[str] | None = None,
) -> PodState:
    return PodState(
        "shop",
        name,
        uid,
        phase=phase,
        disruption_target=disrupted,
        containers_stopped=stopped,
        listed_addresses=None if listed is None else frozenset(listed),
    )


def status(*ips: str) -> str:
    return json.dumps([{"name": "default/net", "interface": "net1", "ips": list(ips)}])


# --- judge --------------------------------------------------------------------------------


def test_a_live_pod_listing_the_address_keeps_it() -> None:
    assert judge("10.0.0.5", WEB, pod(listed={"10.0.0.5"})) is Verdict.KEEP


def test_a_live_pod_without_network_status_keeps_every_address() -> None:
    assert judge("10.0.0.5", WEB, pod(listed=None)) is Verdict.KEEP


def test_a_live_pod_listing_other_addresses_only_is_contradicted_not_released_at_once() -> None:
    verdict = judge("10.0.0.5", WEB, pod(listed={"10.0.0.6", "fd00::5"}))
    assert verdict is Verdict.NOT_IN_NETWORK_STATUS
    assert not verdict.releases_now


def test_a_gone_pod_releases() -> None:
    assert judge("10.0.0.5", WEB, None) is Verdict.POD_DELETED
    assert judge("10.0.0.5", GO_WRITTEN, None) is Verdict.POD_DELETED


def test_the_recorded_uid_tells_an_old_pod_from_its_same_name_successor() -> None:
    successor = pod(uid="uid-2", listed={"10.0.0.5"})
    assert judge("10.0.0.5", WEB, successor) is Verdict.POD_REPLACED
    # Re-recorded by the successor's ADD: its own now.
    rerecorded = Allocation("ctr-2", "shop/web-0", "net1", pod_uid="uid-2")
    assert judge("10.0.0.5", rerecorded, successor) is Verdict.KEEP


def test_without_a_recorded_uid_the_pod_of_that_name_is_the_holder() -> None:
    assert judge("10.0.0.9", GO_WRITTEN, pod("legacy", "uid-x")) is Verdict.KEEP


def test_finished_and_evicted_pods_release() -> None:
    assert judge("10.0.0.5", WEB, pod(phase="Succeeded")) is Verdict.POD_FINISHED
    assert judge("10.0.0.5", WEB, pod(phase="Failed")) is Verdict.POD_FINISHED
    assert judge("10.0.0.5", WEB, pod(disrupted=True, stopped=True)) is Verdict.POD_DISRUPTED
    # Marked for eviction but still running: its containers still use the address.
    assert judge("10.0.0.5", WEB, pod(disrupted=True)) is Verdict.KEEP


def test_entries_without_pod_identity_are_never_judged_released() -> None:
    anonymous = Allocation("ctr-7", "", "net1")
    assert judge("10.0.0.5", anonymous, None) is Verdict.KEEP


def test_ipv6_spellings_compare_equal() -> None:
    listed = parse_network_status(status("fd00:0:0::5/64"))
    assert judge("fd00::5", WEB, pod(listed=set(listed or ()))) is Verdict.KEEP


# --- network-status -----------------------------------------------------------------------


def test_network_status_lists_every_address_of_every_attachment() -> None:
    text = json.dumps(
        [
            {"name": "cbr0", "interface": "eth0", "ips": ["10.244.1.7"], "default": True},
            {"name": "ns/a", "interface": "net1", "ips": ["10.0.0.5", "fd00::5"]},
            {"name": "ns/b", "interface": "net2"},
        ]
    )
    assert parse_network_status(text) == {"10.244.1.7", "10.0.0.5", "fd00::5"}


@pytest.mark.parametrize("text", [None, "", "not json", "{}", "[1]", '[{"ips": "10.0.0.5"}]'])
def test_a_missing_or_malformed_network_status_proves_nothing(text: str | None) -> None:
    assert parse_network_status(text) is None


def test_the_legacy_annotation_is_read_when_the_current_one_is_absent() -> None:
    legacy = {"k8s.v1.cni.cncf.io/networks-status": status("10.0.0.5")}
    assert network_status_of(legacy) == {"10.0.0.5"}
    both = {**legacy, "k8s.v1.cni.cncf.io/network-status": status("10.0.0.6")}
    assert network_status_of(both) == {"10.0.0.6"}


# --- names and addresses ------------------------------------------------------------------


def test_network_names_come_from_pool_names() -> None:
    assert network_name_of("10.0.0.0-24", "10.0.0.0/24") is None
    assert network_name_of("blue-10.0.0.0-24", "10.0.0.0/24") == "blue"
    assert network_name_of("blue-fd00-70---120", "fd00:70::/120") == "blue"
    with pytest.raises(ValueError, match="not named after its range"):
        network_name_of("handmade", "10.0.0.0/24")


def test_entry_addresses_are_the_network_address_plus_the_key() -> None:
    assert address_at("10.240.3.64/26", 5) == "10.240.3.69"
    assert address_at("10.0.0.7/24", 5) == "10.0.0.5"  # a non-canonical range still counts from .0
    [entry] = entries_of("blue-fd00-70---120", "fd00:70::/120", {1: WEB})
    assert (entry.address, entry.reservation) == ("fd00:70::1", "blue-fd00-70--1")


def test_pool_size_excludes_network_and_last_address() -> None:
    assert pool_size("10.0.0.0/24") == 254
    assert pool_size("10.0.0.0/31") == 0
    assert pool_size("10.0.0.0/32") == 0
    # Blocks of a large range lose only the whole range's edges.
    assert pool_size("10.240.0.0/26", "10.240.0.0/22") == 63
    assert pool_size("10.240.1.0/26", "10.240.0.0/22") == 64
    assert pool_size("10.240.3.192/26", "10.240.0.0/22") == 63


# --- the sweep plan -----------------------------------------------------------------------


def test_plan_releases_gone_pods_and_repairs_reservations() -> None:
    alive = Allocation("ctr-a", "shop/alive", "net1", pod_uid="uid-a")
    gone = Allocation("ctr-g", "shop/gone", "net1", pod_uid="uid-g")
    unbacked = Allocation("ctr-u", "shop/unbacked", "net1", pod_uid="uid-u")
    entries = entries_of("10.0.0.0-24", "10.0.0.0/24", {5: alive, 6: gone, 7: unbacked})
    pods = {
        "shop/alive": PodState("shop", "alive", "uid-a", listed_addresses=frozenset({"10.0.0.5"})),
        "shop/unbacked": PodState("shop", "unbacked", "uid-u"),
    }
    reservations = {"10.0.0.5": alive, "10.0.0.6": gone, "10.0.0.99": gone}
    plan = plan_sweep(entries, reservations, pods)
    assert [(entry.address, verdict) for entry, verdict in plan.release] == [
        ("10.0.0.6", Verdict.POD_DELETED)
    ]
    assert [entry.address for entry in plan.missing_reservations] == ["10.0.0.7"]
    assert plan.orphan_reservations == ["10.0.0.99"]
    assert plan.conflicts == [] and plan.contradicted == []


def test_plan_reports_a_conflict_and_releases_nothing_of_live_pods() -> None:
    mine = Allocation("ctr-a", "shop/a", "net1")
    theirs = Allocation("ctr-b", "shop/b", "net1")
    entries = entries_of("10.0.0.0-24", "10.0.0.0/24", {5: mine})
    pods = {"shop/a": PodState("shop", "a", "uid-a"), "shop/b": PodState("shop", "b", "uid-b")}
    plan = plan_sweep(entries, {"10.0.0.5": theirs}, pods)
    assert plan.release == [] and plan.missing_reservations == []
    assert [(c.entry.address, c.holder) for c in plan.conflicts] == [("10.0.0.5", theirs)]


def test_a_reservation_naming_the_old_container_of_the_same_pod_is_no_conflict() -> None:
    rerecorded = Allocation("ctr-new", "shop/a", "net1")
    entries = entries_of("10.0.0.0-24", "10.0.0.0/24", {5: rerecorded})
    pods = {"shop/a": PodState("shop", "a", "uid-a")}
    plan = plan_sweep(entries, {"10.0.0.5": Allocation("ctr-old", "shop/a", "net1")}, pods)
    assert plan.conflicts == [] and plan.missing_reservations == []


def test_no_reservation_repairs_when_a_pool_could_not_be_read() -> None:
    plan = plan_sweep([], {"10.0.0.99": WEB}, {}, repair_reservations=False)
    assert plan.orphan_reservations == []


def test_named_networks_have_their_own_reservations() -> None:
    entries = entries_of("blue-10.0.0.0-24", "10.0.0.0/24", {5: WEB})
    plan = plan_sweep(entries, {"10.0.0.5": WEB}, {"shop/web-0": pod()})
    assert plan.orphan_reservations == ["10.0.0.5"]
    assert [entry.reservation for entry in plan.missing_reservations] == ["blue-10.0.0.5"]


# --- grace and triggers -------------------------------------------------------------------


def test_first_seen_needs_an_unbroken_grace_period() -> None:
    seen: FirstSeen[str] = FirstSeen(grace_s=10)
    assert seen.due({"a"}, now=0) == set()
    assert seen.due({"a", "b"}, now=9) == set()
    assert seen.due({"a", "b"}, now=10) == {"a"}
    assert seen.due({"b"}, now=11) == set()  # "a" vanished: forgotten
    assert seen.due({"a", "b"}, now=19) == {"b"}  # "a" starts again from 19


def evicted(status: str) -> dict[str, object]:
    conditions = [{"type": "DisruptionTarget", "status": status}]
    return {"type": "MODIFIED", "object": {"status": {"conditions": conditions}}}


@pytest.mark.parametrize(
    ("event", "releases"),
    [
        ({"type": "DELETED", "object": {"status": {"phase": "Running"}}}, True),
        ({"type": "MODIFIED", "object": {"status": {"phase": "Succeeded"}}}, True),
        ({"type": None, "object": {"status": {"phase": "Failed"}}}, True),
        (
            {
                "type": "MODIFIED",
                "object": {
                    "status": {"conditions": [{"type": "DisruptionTarget", "status": "True"}]}
                },
            },
            True,
        ),
        (
            {
                "type": "MODIFIED",
                "object": {
                    "status": {"conditions": [{"type": "DisruptionTarget", "status": "False"}]}
                },
            },
            False,
        ),
        ({"type": "ADDED", "object": {"status": {"phase": "Pending"}}}, False),
        ({"type": "MODIFIED", "object": {"status": {"phase": "Running"}}}, False),
    ],
)
def test_which_pod_events_trigger_a_release(event: dict[str, object], releases: bool) -> None:
    assert releases_addresses(event) is releases  # type: ignore[arg-type]
