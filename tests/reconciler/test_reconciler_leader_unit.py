"""Leader election timing with an in-memory Lease and a hand-driven clock.

The real Lease, its compare-and-swap and two real processes are exercised in
``test_reconciler_processes.py``; this file pins the timing rules.
"""

from __future__ import annotations

import datetime as dt
from typing import cast

from whereabouts_py.errors import ConflictError
from whereabouts_py.reconciler.leader import LeaderElection
from whereabouts_py.store.kube import KubeStore, LeaseRecord


class MemoryLeases:
    """get_lease/write_lease with the apiserver's compare-and-swap semantics."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.version = 0

    def get_lease(self, name: str) -> LeaseRecord | None:
        return self.record

    def write_lease(
        self, current: LeaseRecord | None, name: str, holder: str, duration_s: float
    ) -> LeaseRecord:
        expected = None if self.record is None else self.record.resource_version
        given = None if current is None else current.resource_version
        if expected != given:
            raise ConflictError("lease changed")
        self.version += 1
        self.record = LeaseRecord(
            name, holder, dt.datetime.now(dt.UTC), duration_s, str(self.version)
        )
        return self.record


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(leases: MemoryLeases, clock: Clock, identity: str) -> LeaderElection:
    return LeaderElection(
        cast(KubeStore, leases), "reconciler", identity, duration_s=5.0, clock=clock
    )


def test_one_replica_leads_and_the_other_takes_over_only_after_the_lease_duration() -> None:
    leases, clock = MemoryLeases(), Clock()
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    # a keeps renewing: b never takes over.
    for _ in range(10):
        clock.now += 1.0
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew()
    # a dies. b takes over once it has seen the record unchanged for the duration.
    died = clock.now
    while not b.try_acquire_or_renew():
        clock.now += 0.5
        assert clock.now - died <= 6.0
    assert clock.now - died >= 5.0
    assert b.leading and leases.record is not None and leases.record.holder == "b"


def test_a_leader_that_cannot_renew_stops_acting_before_anyone_else_may_start() -> None:
    leases, clock = MemoryLeases(), Clock()
    stopped: list[str] = []
    a = LeaderElection(
        cast(KubeStore, leases),
        "reconciler",
        "a",
        duration_s=5.0,
        clock=clock,
        on_stopped_leading=lambda: stopped.append("a"),
    )
    assert a.try_acquire_or_renew()
    clock.now += 3.0
    assert a.leading  # within the renew deadline (2/3 of 5 s)
    clock.now += 0.5
    assert not a.leading and stopped == ["a"]


def test_a_leader_whose_lease_was_taken_steps_down() -> None:
    leases, clock = MemoryLeases(), Clock()
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock.now += 10.0  # a was paused (e.g. a long GC): its renew deadline passed
    assert b.try_acquire_or_renew()
    assert not a.try_acquire_or_renew()
    assert not a.leading and b.leading


def test_giving_up_the_lease_lets_the_follower_take_it_at_once() -> None:
    leases, clock = MemoryLeases(), Clock()
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    a.release()
    assert not a.leading
    assert b.try_acquire_or_renew()
