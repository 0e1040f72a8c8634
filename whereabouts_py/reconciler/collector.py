"""Release the addresses of gone pods and repair reservations: the reconciler's work.

Two entry points, both called only while this replica leads:

* ``release_for_pods(podrefs)`` — the event path: a pod was deleted, has
  finished, or is being evicted. Every entry naming one of these pods, in
  every IPPool of the namespace, is judged against the pod as it is *now*
  (``core.ownership.judge``) and released if its pod is gone.
* ``release_for_claims(refs)`` — the event path of persistent addresses:
  an IPAMClaim was deleted. Every entry the claim owns is released once a
  fresh read shows the claim gone (entries a claim owns are never released
  for their pods' sake; ``core.ownership.judge``).
* ``sweep()`` — the full pass at startup, on taking the lead, and every
  sweep interval: releases what the event path missed, releases entries that
  a live pod's network-status contradicts (after a grace period), deletes
  reservations that no pool entry backs, recreates missing reservations of
  live entries, and reports conflicts.

Where the pools and reservations come from: the watched caches of
``cache.py`` when the process runs (``GarbageCollector(cache=...)``), else a
listing made for the call. In resourceVersion terms, the cache never decides
on its own:

* The event path reads every pool the pod index names afresh (GET: the
  pool at its current resourceVersion R) and judges the entries found
  there, against the pod read after that GET, or against the apiserver's
  own report (a DELETED event) that the entry's pod UID is gone.
* Every write carries a resourceVersion precondition: the pool's PUT the R
  just read (a 409 means someone wrote since: read again, judge again), a
  reservation's DELETE the version it was cached at, and only when that
  version names exactly this attachment (a 409 means it changed: GET it).
* A pod the index does not know (its ADD not yet seen by the watch) frees
  nothing; the operator looks at it again a little later, and the sweep
  catches the rest.

Why the read order makes the decisions safe (reservations, then pools, then
pods; with caches, "read" means "observed by the watch", which happened
before the pods are read):

* Pools before pods: an entry seen in a pool was written by an ADD for a pod
  that existed before the pool was read. If the pods read afterwards lack it
  (or show another UID), that pod is gone. A same-name successor's ADD
  rewrites the entry, and the compare-and-swap below finds it changed and
  leaves it alone.
* Pools before IPAMClaims, for the same reason: the daemon reads the claim
  before it writes an entry for it, so a claim missing from the later list
  was deleted. When the claims cannot be listed (a 403), every claim-owned
  entry is kept.
* Reservations before pools: the daemon writes the pool entry before the
  reservation, so a reservation seen first has its entry in the pools read
  next. The Go project writes the reservation first; the grace period and a
  second read before deleting cover that.

Writes follow the daemon's order: the reservation is deleted first (only
when it names exactly the attachment being released, with a resourceVersion
precondition), then the entry is removed from its IPPool by compare-and-swap,
only if the same holder is still at the same offset. A lost race re-reads the
pool and re-applies, at most ``MAX_CAS_ATTEMPTS`` times.

A pool written with ``enable_overlapping_ranges: false`` has no
reservations; the sweep creates them for its live entries. That is harmless
(the reservation only stops overlapping ranges from reusing the address) and
a later sweep deletes it once the entry is gone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import netaddr

from whereabouts_py.core.allocator import Allocation
from whereabouts_py.core.claims import is_claimed
from whereabouts_py.core.ownership import (
    Conflict,
    HeldEntry,
    PodState,
    PoolObject,
    Unmirrored,
    Verdict,
    entries_of,
    judge,
    network_name_of,
    plan_sweep,
    podrefs_of,
    reservation_held_by,
    same_attachment,
    unmirrored_entries,
)
from whereabouts_py.core.poolops import pool_size
from whereabouts_py.errors import (
    AlreadyExistsError,
    ConflictError,
    StoreError,
    TryAgainError,
    WhereaboutsError,
)
from whereabouts_py.metrics import reconciler as metrics
from whereabouts_py.reconciler.cache import PoolCache
from whereabouts_py.store.base import Store
from whereabouts_py.store.kube import (
    GROUP,
    VERSION,
    WHOLE_RANGE_ANNOTATION,
    ObjectRef,
    PoolSnapshot,
    Reservation,
)
from whereabouts_py.store.values import pool_lease_name

log = logging.getLogger(__name__)

MAX_CAS_ATTEMPTS = 10
EVENT_RELEASED = "IPAddressGarbageCollected"
EVENT_FAILED = "IPAddressGarbageCollectionFailed"
EVENT_CONFLICT = "IPAddressConflict"
EVENT_REPAIRED = "IPAddressReservationRepaired"
COMPONENT = "whereabouts-py-reconciler"

K = TypeVar("K", bound=Hashable)
A = TypeVar("A")
R = TypeVar("R")
# Pools released (and Events posted) at once in a batch: the apiserver, not this
# process, is the limit, and it has other clients.
PARALLEL_REQUESTS = 4


class FirstSeen(Generic[K]):
    """When each of a set of findings was first seen; which have lasted a grace period.

    Findings that are not seen again are forgotten, so a condition must hold
    without a break for the whole grace period.
    """

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._since: dict[K, float] = {}

    def due(self, findings: Iterable[K], now: float) -> set[K]:
        current = set(findings)
        self._since = {key: self._since.get(key, now) for key in current}
        return {key for key, since in self._since.items() if now - since >= self.grace_s}


@dataclass(frozen=True)
class Released:
    entry: HeldEntry
    verdict: Verdict


@dataclass
class SweepReport:
    """What one sweep saw and did (logged, and returned for tests)."""

    pools: int = 0
    entries: int = 0
    released: list[Released] = field(default_factory=list)
    awaiting_grace: int = 0
    reservations_deleted: list[str] = field(default_factory=list)
    reservations_created: list[str] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    # Block entries copied into the Go plugin's whole-range object (addresses).
    mirrored: list[str] = field(default_factory=list)
    failures: int = 0
    seconds: float = 0.0


class GarbageCollector:
    """Judges entries and releases or repairs them in one namespace's pools."""

    def __init__(
        self,
        store: Store,
        *,
        grace_period_s: float,
        leading: Callable[[], bool] = lambda: True,
        instance: str = "",
        clock: Callable[[], float] = time.monotonic,
        cache: PoolCache | None = None,
        sync_timeout_s: float = 30.0,
    ) -> None:
        self.store = store
        # Watched IPPools and reservations; without it, every pass lists them afresh.
        self.cache = cache
        self._sync_timeout_s = sync_timeout_s
        self._leading = leading
        self._instance = instance
        self._clock = clock
        self._contradicted: FirstSeen[tuple[str, int, Allocation]] = FirstSeen(grace_period_s)
        self._orphans: FirstSeen[tuple[str, str]] = FirstSeen(grace_period_s)
        self._unbacked: FirstSeen[tuple[str, int, Allocation]] = FirstSeen(grace_period_s)
        self._reported_conflicts: set[tuple[str, int, Allocation, str]] = set()
        self._empty_blocks: dict[str, str] = {}  # block IPPool -> resourceVersion seen empty
        for verdict in Verdict:
            if verdict.releases_now or verdict is Verdict.NOT_IN_NETWORK_STATUS:
                metrics.GC_RELEASES.labels(reason=verdict.value)

    def forget(self) -> None:
        """Drop what earlier sweeps saw: a new term as leader starts every grace period anew."""
        self._contradicted = FirstSeen(self._contradicted.grace_s)
        self._orphans = FirstSeen(self._orphans.grace_s)
        self._unbacked = FirstSeen(self._unbacked.grace_s)
        self._reported_conflicts = set()

    # --- reading -------------------------------------------------------------------------
    @staticmethod
    def _entries(pools: Iterable[PoolSnapshot]) -> tuple[list[HeldEntry], bool]:
        """Entries of every readable pool, and whether every pool was readable."""
        entries: list[HeldEntry] = []
        all_readable = True
        for pool in pools:
            try:
                entries.extend(entries_of(pool.name, pool.cidr, pool.allocations))
            except ValueError as error:
                all_readable = False
                log.warning("skipping IPPool %s: %s", pool.name, error)
        return entries, all_readable

    def _view(self) -> PoolCache:
        """The watched cache once it has listed everything, else a one-off listing of pools."""
        if self.cache is None:
            return PoolCache.listed(self.store)
        for synced in (self.cache.pools_synced, self.cache.reservations_synced):
            if not synced.wait(self._sync_timeout_s):
                raise TryAgainError(
                    "the IPPool and reservation caches are not filled yet",
                    "their first listing has not finished; tried again soon",
                )
        return self.cache

    def _reread(self, pools: Sequence[PoolSnapshot]) -> list[PoolSnapshot]:
        """The pools as they are now (gone ones left out).

        Only the watches write the cache, in the order the apiserver sent the
        events: a fresh read put there could overwrite a newer event.
        """
        read = _concurrently(lambda pool: self.store.get_pool(pool.name, pool.cidr), pools)
        return [pool for pool in read if pool.resource_version is not None]

    def _pod(self, podref: str) -> PodState | None:
        namespace, _, name = podref.partition("/")
        return self.store.get_pod(namespace, name)

    # --- the event path ------------------------------------------------------------------
    def release_for_pods(
        self, podrefs: Collection[str], deleted: Mapping[str, Collection[str]] | None = None
    ) -> list[Released]:
        """Release what the named pods held, where the pods are gone now.

        ``deleted`` names, per pod reference, UIDs the apiserver reported
        deleted (a watch's DELETED event). A pod whose entries all carry
        such a UID is not read again: a UID is never reused, so that pod is
        gone for good. Any other pod is read, after the pools were seen.
        """
        wanted = set(podrefs)
        view = self._view()
        # Only the pools the index names, each read afresh (one GET) before the pods
        # are: the decision is made on the pool as it is, the cache only says where.
        pools = view.pools_holding(wanted)
        if not view.fresh:
            pools = self._reread(pools)
        entries, _ = self._entries(pools)
        mine = [entry for entry in entries if entry.allocation.podref in wanted]
        if not mine:
            log.debug("pods %s hold no address here", sorted(wanted))
            return []
        deleted = deleted or {}
        pods: dict[str, PodState | None] = {}
        for podref in podrefs_of(mine):
            uids = {entry.allocation.pod_uid for entry in mine if entry.allocation.podref == podref}
            known_gone = deleted.get(podref) or ()
            pods[podref] = None if all(uid in known_gone for uid in uids) else self._pod(podref)
        doomed: list[tuple[HeldEntry, Verdict]] = []
        for entry in mine:
            pod = pods.get(entry.allocation.podref)
            verdict = judge(entry.address, entry.allocation, pod)
            if verdict.releases_now:
                doomed.append((entry, verdict))
            else:
                log.info(
                    "kept address=%s pool=%s pod=%s uid=%s verdict=%s",
                    entry.address,
                    entry.pool,
                    entry.allocation.podref,
                    entry.allocation.pod_uid or "-",
                    verdict.value,
                )
        snapshots = {pool.name: pool for pool in pools}
        released, failures = self._release(doomed, snapshots, pods, view)
        if failures:
            raise TryAgainError(
                f"{failures} of {len(doomed)} releases for pods {sorted(wanted)} failed",
                "see the warnings above; they are tried again",
            )
        return released

    def claim_refs(self) -> set[str] | None:
        """Every IPAMClaim that exists (``namespace/name``); None when they cannot be read."""
        try:
            return {claim.ref for claim in self.store.list_ipam_claims()}
        except StoreError as error:
            log.warning("IPAMClaims not readable, keeping every claim-owned address: %s", error)
            return None

    def release_for_claims(self, refs: Collection[str]) -> list[Released]:
        """Release what the named IPAMClaims (``namespace/name``) owned, where they are gone."""
        wanted = {ref for ref in refs if is_claimed(ref)}
        view = self._view()
        pools = view.pools()  # before the claims: see the module docstring
        entries, _ = self._entries(pools)
        mine = [entry for entry in entries if entry.allocation.ipam_claim in wanted]
        if not mine:
            log.debug("IPAMClaims %s own no address here", sorted(wanted))
            return []
        existing: set[str] = set()
        for ref in sorted({entry.allocation.ipam_claim or "" for entry in mine}):
            namespace, _, name = ref.partition("/")
            if self.store.get_ipam_claim(namespace, name) is not None:
                existing.add(ref)
        doomed: list[tuple[HeldEntry, Verdict]] = []
        for entry in mine:
            verdict = judge(entry.address, entry.allocation, None, existing)
            if verdict.releases_now:
                doomed.append((entry, verdict))
        snapshots = {pool.name: pool for pool in pools}
        released, failures = self._release(doomed, snapshots, {}, view)
        if failures:
            raise TryAgainError(
                f"{failures} of {len(doomed)} releases for IPAMClaims {sorted(wanted)} failed",
                "see the warnings above; they are tried again",
            )
        return released

    # --- the sweep -----------------------------------------------------------------------
    def sweep(self) -> SweepReport:
        """One full pass; see the module docstring for what it releases and repairs."""
        started = self._clock()
        report = SweepReport()
        if self.cache is None:
            reservations = self.store.list_reservations()
            pools = self.store.list_pools()
            view: PoolCache | None = None
        else:  # the same order, from the watched cache
            view = self._view()
            reservations = view.reservations()
            pools = view.pools()
        pods = {pod.podref: pod for pod in self.store.list_pods()}
        claims = self.claim_refs()
        entries, all_readable = self._entries(pools)
        report.pools, report.entries = len(pools), len(entries)
        plan = plan_sweep(
            entries,
            {reservation.name: reservation.holder for reservation in reservations},
            pods,
            repair_reservations=all_readable,
            claims=claims,
        )
        now = self._clock()
        contradicted = {entry.key: entry for entry in plan.contradicted}
        due = self._contradicted.due(contradicted, now)
        report.awaiting_grace = len(contradicted) - len(due)
        doomed = [*plan.release]
        doomed += [(contradicted[key], Verdict.NOT_IN_NETWORK_STATUS) for key in sorted_keys(due)]
        snapshots = {pool.name: pool for pool in pools}
        states: dict[str, PodState | None] = {
            podref: pods.get(podref) for podref in podrefs_of(e for e, _ in doomed)
        }
        report.released, report.failures = self._release(doomed, snapshots, states, view)
        if self._leading():
            settled = {entry.key for entry, _ in doomed} | set(contradicted)
            report.mirrored = self._mirror_blocks(pools, settled)
            gone = set(self.delete_empty_blocks(pools))
            pools = [pool for pool in pools if pool.name not in gone]

        versions = {reservation.name: reservation.resource_version for reservation in reservations}
        orphans = self._orphans.due(
            [(name, versions[name]) for name in plan.orphan_reservations], now
        )
        unbacked = {entry.key: entry for entry in plan.missing_reservations}
        unbacked_due = self._unbacked.due(unbacked, now)
        conflicts = list(plan.conflicts)
        if (orphans or unbacked_due) and self._leading():
            deleted, created, found = self._repair(
                orphans, [unbacked[key] for key in sorted_keys(unbacked_due)], pods
            )
            report.reservations_deleted, report.reservations_created = deleted, created
            conflicts += found
        report.conflicts = conflicts
        self._report_conflicts(conflicts, pods)

        released_per_pool: dict[str, int] = {}
        for item in report.released:
            released_per_pool[item.entry.pool] = released_per_pool.get(item.entry.pool, 0) + 1
        self._publish_pools(pools, released_per_pool)
        report.seconds = self._clock() - started
        metrics.SWEEP_SECONDS.observe(report.seconds)
        log.info(
            "sweep finished pools=%d allocations=%d released=%d awaiting_grace=%d "
            "reservations_deleted=%d reservations_created=%d conflicts=%d failures=%d "
            "seconds=%.3f",
            report.pools,
            report.entries,
            len(report.released),
            report.awaiting_grace,
            len(report.reservations_deleted),
            len(report.reservations_created),
            len(report.conflicts),
            report.failures,
            report.seconds,
        )
        return report

    def delete_empty_blocks(self, pools: Sequence[PoolSnapshot]) -> list[str]:
        """Delete the blocks of large ranges that stay empty and unclaimed; return their names.

        A block goes when two sweeps in a row found it empty at the same
        resourceVersion (untouched in between) and no node holds its Lease. The
        delete is a compare-and-swap on that version: an ADD that wrote first
        keeps the block; one that writes after gets a conflict, reads the pool
        as missing and creates it again. Its Lease goes the same way, unless a
        node took it meanwhile. The Go plugin's whole-range object has no
        range annotation and is never touched.
        """
        seen, self._empty_blocks = self._empty_blocks, {}
        now = dt.datetime.now(dt.UTC)
        deleted: list[str] = []
        for pool in pools:
            annotations = pool.metadata.get("annotations") or {}
            if pool.allocations or not annotations.get(WHOLE_RANGE_ANNOTATION):
                continue
            version = pool.resource_version
            if version is None:
                continue
            if seen.get(pool.name) != version:
                self._empty_blocks[pool.name] = version  # the next sweep decides
                continue
            try:
                lease = self.store.get_lease(pool_lease_name(pool.name))
                if lease is not None and lease.held_by_other("", now):
                    self._empty_blocks[pool.name] = version  # a node is about to use it
                    continue
                if not self.store.delete_pool(pool):
                    continue
                deleted.append(pool.name)
                metrics.BLOCKS_DELETED.inc()
                if lease is not None:
                    with contextlib.suppress(ConflictError):  # taken meanwhile: it stays
                        self.store.delete_lease(lease)
            except ConflictError:
                continue  # written since: in use again
            except WhereaboutsError as error:
                log.warning("empty block IPPool %s not deleted: %s", pool.name, error)
                metrics.count_failure("delete_block")
        if deleted:
            log.info("deleted empty block IPPools: %s", ", ".join(deleted))
        return deleted

    @staticmethod
    def _publish_pools(pools: Sequence[PoolSnapshot], released: Mapping[str, int]) -> None:
        usages = []
        for pool in pools:
            try:
                network = network_name_of(pool.name, pool.cidr) or ""
                annotations = pool.metadata.get("annotations") or {}
                whole = annotations.get(WHOLE_RANGE_ANNOTATION)
                size = pool_size(whole or pool.cidr)  # the whole range's
            except (ValueError, netaddr.AddrFormatError):
                continue  # already warned about while reading the entries
            allocated = max(0, len(pool.allocations) - released.get(pool.name, 0))
            without_node = sum(1 for holder in pool.allocations.values() if not holder.node)
            claimed = sum(1 for holder in pool.allocations.values() if holder.ipam_claim)
            usages.append(
                metrics.PoolUsage(
                    pool.name,
                    network,
                    whole or pool.cidr,
                    size,
                    allocated,
                    block=whole is not None,
                    without_node=without_node,
                    claimed=claimed,
                )
            )
        metrics.publish_pools(usages)

    # --- releasing -----------------------------------------------------------------------
    def _release(
        self,
        doomed: Sequence[tuple[HeldEntry, Verdict]],
        snapshots: Mapping[str, PoolSnapshot],
        pods: Mapping[str, PodState | None],
        view: PoolCache | None = None,
    ) -> tuple[list[Released], int]:
        """Release entries pool by pool, reservation first; return what went and failures.

        ``snapshots`` (and ``view``'s reservations) may be stale: they serve
        only as the preconditions of the writes, and a write that finds the
        object changed reads it again before deciding anything.
        """
        by_pool: dict[str, list[tuple[HeldEntry, Verdict]]] = {}
        for entry, verdict in doomed:
            by_pool.setdefault(entry.pool, []).append((entry, verdict))
        released: list[Released] = []
        failures = 0
        # Pools are independent: a burst of deletions over many pools is released
        # a few pools at a time (each pool's own steps stay in order).
        outcomes = _concurrently(
            lambda item: self._release_in_pool(item[0], item[1], snapshots, pods, view),
            sorted(by_pool.items()),
        )
        for pool_released, pool_failures in outcomes:
            released += pool_released
            failures += pool_failures
        self._announce(released, pods)
        return released, failures

    def _release_in_pool(
        self,
        pool: str,
        items: Sequence[tuple[HeldEntry, Verdict]],
        snapshots: Mapping[str, PoolSnapshot],
        pods: Mapping[str, PodState | None],
        view: PoolCache | None,
    ) -> tuple[list[Released], int]:
        """One pool's releases: reservations first, then one write of the pool."""
        if not self._leading():
            log.warning("no longer leading: IPPool %s left unreleased", pool)
            return [], 0
        failures = 0
        ready: list[tuple[HeldEntry, Verdict]] = []
        for entry, verdict in items:
            try:
                self._drop_reservation(entry, view)
            except StoreError as error:
                failures += 1
                self._failed(entry, pods, f"deleting its reservation: {error}")
                continue
            ready.append((entry, verdict))
        if not ready:
            return [], failures
        try:
            gone = self._remove_from_pool(snapshots.get(pool), ready)
        except StoreError as error:
            for entry, _ in ready:
                self._failed(entry, pods, f"updating IPPool {pool}: {error}")
            return [], failures + len(ready)
        released: list[Released] = []
        for entry, verdict in ready:
            if entry.offset in gone:
                released.append(Released(entry, verdict))
            else:
                log.info(
                    "not released address=%s pool=%s pod=%s: the entry changed meanwhile",
                    entry.address,
                    pool,
                    entry.allocation.podref,
                )
        return released, failures

    def _drop_reservation(self, entry: HeldEntry, view: PoolCache | None = None) -> None:
        """Delete the entry's reservation if (and only if) it names exactly this attachment.

        A cached reservation naming this attachment is deleted with its cached
        resourceVersion as precondition (one request); anything else (absent
        from the cache, another holder, a conflict) is read afresh first.
        """
        cached = view.reservation(entry.reservation) if view is not None else None
        if cached is not None and reservation_held_by(cached.holder, entry.allocation):
            try:
                self.store.delete_reservation(cached)
                return
            except ConflictError:
                pass  # the cache was behind: read it
        for _ in range(MAX_CAS_ATTEMPTS):
            reservation = self.store.get_reservation(entry.reservation)
            if reservation is None or not reservation_held_by(reservation.holder, entry.allocation):
                return  # none, or another attachment's claim (an overlapping range): keep it
            try:
                self.store.delete_reservation(reservation)
                return
            except ConflictError:
                continue  # changed since read: look again
        raise StoreError(
            f"OverlappingRangeIPReservation {entry.reservation} kept changing",
            f"gave up after {MAX_CAS_ATTEMPTS} attempts; the next sweep retries",
        )

    def _remove_from_pool(
        self,
        snapshot: PoolSnapshot | None,
        items: Sequence[tuple[HeldEntry, Verdict]],
    ) -> set[int]:
        """Remove the entries still held by the same holder; return the freed offsets.

        The first attempt writes against ``snapshot`` as given (perhaps from
        the cache): its resourceVersion is the precondition, so a stale one
        only costs a 409 and a fresh read.
        """
        first = items[0][0]
        wanted = {entry.offset: entry.allocation for entry, _ in items}
        for attempt in range(MAX_CAS_ATTEMPTS):
            if snapshot is None:
                snapshot = self.store.get_pool(first.pool, first.cidr)
            if snapshot.resource_version is None:
                return set()
            gone = {
                offset
                for offset, holder in wanted.items()
                if snapshot.allocations.get(offset) == holder
            }
            if not gone:
                return set()
            remaining = {k: v for k, v in snapshot.allocations.items() if k not in gone}
            try:
                self.store.write_pool(snapshot, remaining)
                return gone
            except ConflictError:
                snapshot = None
                # Jittered, so that writers that collided do not collide again in lockstep.
                time.sleep(random.uniform(0.0, 0.02 * (attempt + 1)))
        raise StoreError(
            f"IPPool {first.pool} kept changing",
            f"lost {MAX_CAS_ATTEMPTS} compare-and-swap races; the next sweep retries",
        )

    # --- side by side with the Go plugin ------------------------------------------------
    def _mirror_blocks(
        self, pools: Sequence[PoolSnapshot], settled: Collection[tuple[str, int, Allocation]]
    ) -> list[str]:
        """Copy live block entries into the Go plugin's whole-range object where it exists.

        The Go plugin reads only that object (and reservations, which its DEL
        may delete from under us); the daemons mirror every new entry there
        once it exists, and this catches up entries made before it appeared.
        An address another attachment holds there is left alone: ``kubectl
        whereabouts check`` reports it as held twice.
        """
        objects = [
            PoolObject(
                pool.name,
                pool.cidr,
                pool.allocations,
                (pool.metadata.get("annotations") or {}).get(WHOLE_RANGE_ANNOTATION),
            )
            for pool in pools
        ]
        missing = [
            item
            for item in unmirrored_entries(objects)
            if item.clash is None and item.entry.key not in settled
        ]
        by_whole: dict[tuple[str, str], list[Unmirrored]] = {}
        for item in missing:
            by_whole.setdefault((item.whole, item.whole_cidr), []).append(item)
        mirrored: list[str] = []
        for (whole, cidr), items in sorted(by_whole.items()):
            try:
                mirrored += self._mirror_into(whole, cidr, items)
            except StoreError as error:
                metrics.count_failure("mirror")
                log.warning("could not mirror block entries into IPPool %s: %s", whole, error)
        return mirrored

    def _mirror_into(self, whole: str, cidr: str, items: Sequence[Unmirrored]) -> list[str]:
        # A second look at the blocks: an entry released since the sweep's read
        # must not come back as a mirror.
        blocks = {item.entry.pool: item.entry.cidr for item in items}
        current = {name: self.store.get_pool(name, block) for name, block in blocks.items()}
        live = [
            item
            for item in items
            if current[item.entry.pool].allocations.get(item.entry.offset) == item.entry.allocation
        ]
        for attempt in range(MAX_CAS_ATTEMPTS):
            snapshot = self.store.get_pool(whole, cidr)
            if snapshot.resource_version is None:
                return []
            updated = dict(snapshot.allocations)
            added: list[str] = []
            for item in live:
                if item.offset not in updated:
                    updated[item.offset] = item.entry.allocation
                    added.append(item.entry.address)
            if not added:
                return []
            try:
                self.store.write_pool(snapshot, updated)
            except ConflictError:
                time.sleep(random.uniform(0.0, 0.02 * (attempt + 1)))
                continue
            log.info("mirrored %d block entries into IPPool %s: %s", len(added), whole, added)
            metrics.count_repair("mirrored")
            return added
        raise StoreError(
            f"IPPool {whole} kept changing",
            f"lost {MAX_CAS_ATTEMPTS} compare-and-swap races; the next sweep retries",
        )

    # --- repairing reservations --------------------------------------------------------
    def _repair(
        self,
        orphans: Collection[tuple[str, str]],
        unbacked: Sequence[HeldEntry],
        pods: Mapping[str, PodState],
    ) -> tuple[list[str], list[str], list[Conflict]]:
        """Take a second look (reservations, then pools), then repair what still needs it."""
        reservations = {r.name: r for r in self.store.list_reservations()}
        entries, all_readable = self._entries(self.store.list_pools())
        if not all_readable:
            return [], [], []
        deleted = self._delete_orphans(orphans, reservations, {e.reservation for e in entries})
        fresh = {entry.key for entry in entries}
        created: list[str] = []
        conflicts: list[Conflict] = []
        for entry in unbacked:
            if entry.key not in fresh:
                continue  # released or rewritten meanwhile
            try:
                holder = self._recreate_reservation(entry, reservations.get(entry.reservation))
            except StoreError as error:
                metrics.count_failure("create_reservation")
                log.warning("could not recreate reservation %s: %s", entry.reservation, error)
                continue
            if holder is None:
                created.append(entry.reservation)
                self._event(
                    self._target(entry, pods.get(entry.allocation.podref)),
                    EVENT_REPAIRED,
                    f"recreated the missing reservation {entry.reservation} of "
                    f"{entry.address} (IPPool {entry.pool})",
                )
            elif not same_attachment(holder, entry.allocation):
                conflicts.append(Conflict(entry, holder))
        return deleted, created, conflicts

    def _delete_orphans(
        self,
        orphans: Collection[tuple[str, str]],
        reservations: Mapping[str, Reservation],
        backed: Collection[str],
    ) -> list[str]:
        """Delete reservations still unchanged and still backed by no pool entry."""
        deleted: list[str] = []
        for name, version in sorted(orphans):
            reservation = reservations.get(name)
            if reservation is None or reservation.resource_version != version or name in backed:
                continue  # gone, changed or backed now: not an orphan any more
            try:
                if not self.store.delete_reservation(reservation):
                    continue
            except StoreError as error:
                metrics.count_failure("delete_reservation")
                log.warning("could not delete orphan reservation %s: %s", name, error)
                continue
            deleted.append(name)
            metrics.count_repair("deleted")
            holder = reservation.holder.describe()
            log.info(
                "deleted orphan reservation=%s holder=%s: no IPPool entry holds it", name, holder
            )
            self._event(
                ObjectRef(
                    "OverlappingRangeIPReservation",
                    f"{GROUP}/{VERSION}",
                    self.store.namespace,
                    name,
                ),
                EVENT_RELEASED,
                f"deleted reservation {name} of {holder}: no IPPool entry holds the address",
            )
        return deleted

    def _recreate_reservation(
        self, entry: HeldEntry, existing: Reservation | None
    ) -> Allocation | None:
        """Create the entry's missing reservation; the holder found instead, if any."""
        if existing is not None:
            return existing.holder
        try:
            self.store.create_reservation(entry.reservation, entry.allocation)
        except AlreadyExistsError:
            found = self.store.get_reservation(entry.reservation)
            # Deleted again at once: count it as nobody's; the next sweep looks again.
            return found.holder if found is not None else entry.allocation
        metrics.count_repair("created")
        log.info(
            "recreated reservation=%s for address=%s pool=%s pod=%s",
            entry.reservation,
            entry.address,
            entry.pool,
            entry.allocation.podref or "-",
        )
        return None

    def _report_conflicts(
        self, conflicts: Sequence[Conflict], pods: Mapping[str, PodState]
    ) -> None:
        """Conflicts are never resolved here (both holders may be alive): tell the operator."""
        metrics.CONFLICTS.set(len(conflicts))
        current: set[tuple[str, int, Allocation, str]] = set()
        for conflict in conflicts:
            entry = conflict.entry
            key = (*entry.key, conflict.holder.podref or conflict.holder.container_id)
            current.add(key)
            if key in self._reported_conflicts:
                continue
            message = (
                f"address {entry.address} (IPPool {entry.pool}) of "
                f"{entry.allocation.describe()} is reserved cluster-wide by "
                f"{conflict.holder.describe()} (reservation {entry.reservation}); "
                "not released: check both pods"
            )
            log.error("conflict %s", message)
            self._event(
                self._target(entry, pods.get(entry.allocation.podref)),
                EVENT_CONFLICT,
                message,
                warning=True,
            )
        self._reported_conflicts = current

    # --- telling people ----------------------------------------------------------------
    def _target(self, entry: HeldEntry, pod: PodState | None) -> ObjectRef:
        """The pod when it exists and is the entry's holder, else the IPPool."""
        if pod is not None and entry.allocation.pod_uid in (None, pod.uid):
            return ObjectRef("Pod", "v1", pod.namespace, pod.name, pod.uid)
        return ObjectRef("IPPool", f"{GROUP}/{VERSION}", self.store.namespace, entry.pool)

    def _announce(self, released: Sequence[Released], pods: Mapping[str, PodState | None]) -> None:
        grouped: dict[ObjectRef, list[Released]] = {}
        for item in released:
            entry = item.entry
            metrics.count_release(item.verdict.value)
            log.info(
                "released address=%s pool=%s pod=%s uid=%s ifname=%s node=%s reason=%s",
                entry.address,
                entry.pool,
                entry.allocation.podref,
                entry.allocation.pod_uid or "-",
                entry.allocation.ifname or "-",
                entry.allocation.node or "-",
                item.verdict.value,
            )
            target = self._target(entry, pods.get(entry.allocation.podref))
            grouped.setdefault(target, []).append(item)
        _concurrently(
            lambda group: self._event(
                group[0], EVENT_RELEASED, f"released {', '.join(_describe(i) for i in group[1])}"
            ),
            list(grouped.items()),
        )

    def _failed(self, entry: HeldEntry, pods: Mapping[str, PodState | None], problem: str) -> None:
        metrics.count_failure("release")
        log.warning(
            "release failed address=%s pool=%s pod=%s: %s",
            entry.address,
            entry.pool,
            entry.allocation.podref,
            problem,
        )
        self._event(
            self._target(entry, pods.get(entry.allocation.podref)),
            EVENT_FAILED,
            f"could not release {entry.address} (IPPool {entry.pool}): {problem}",
            warning=True,
        )

    def _event(self, about: ObjectRef, reason: str, message: str, *, warning: bool = False) -> None:
        """Events are best effort: a failure to record one never stops the work."""
        try:
            self.store.create_event(
                about,
                reason,
                message,
                warning=warning,
                component=COMPONENT,
                instance=self._instance,
            )
        except StoreError as error:
            log.info(
                "could not record Event %s on %s %s: %s", reason, about.kind, about.name, error
            )


def _concurrently(action: Callable[[A], R], items: Sequence[A]) -> list[R]:
    """``action`` of every item, in order; a few at a time when there are many."""
    if len(items) <= 2:
        return [action(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(PARALLEL_REQUESTS, len(items))) as pool:
        return list(pool.map(action, items))


def _describe(item: Released) -> str:
    entry = item.entry
    return (
        f"{entry.address} (IPPool {entry.pool}, pod {entry.allocation.podref}, "
        f"interface {entry.allocation.ifname or '?'}, {item.verdict.value})"
    )


def sorted_keys(keys: Iterable[tuple[str, int, Allocation]]) -> list[tuple[str, int, Allocation]]:
    return sorted(keys, key=lambda key: (key[0], key[1]))
