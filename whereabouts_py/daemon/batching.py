"""One writer per IPPool on this node: batches pending work into single CAS writes.

Every request that changes a pool (an ADD's assignment, a DEL's release, a GC
sweep) is an *operation*: a pure function from the pool's allocations to new
allocations plus a value for its caller. Requests queue per pool; one worker
thread takes everything queued, applies the operations in order to the latest
snapshot, and writes the result with one compare-and-swap. A lost race (409)
re-reads the pool and re-applies the whole batch: operations are pure, so
re-applying them is safe, and the pool's resourceVersion alone decides who
wins. Correctness never depends on anything else here.

Leases only keep contention from turning into retry storms. While no write
of ours has lost a race recently, the worker writes optimistically. After a
conflict it coordinates for a while: it takes the pool's coordination Lease
(itself by compare-and-swap) before writing, keeps it while its queue has
work, and hands it back when the queue drains. Waiting for the Lease lets
more of this node's requests join the batch, so under load each turn writes
many allocations at once.

A node that waits for the Lease is told, it does not poll: it watches the
Lease (one request for as long as it keeps waiting now and then) and tries
again only when the Lease changes hands, is given back, or its holder's term
runs out. When it is given back, the waiting nodes each wait a random moment
first, and one that sees it taken meanwhile does not even try. Where the
watch is not allowed (no ``watch`` verb on Leases), the worker falls back to
looking at the Lease every few milliseconds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from whereabouts_py.core import turns
from whereabouts_py.core.allocator import Allocation
from whereabouts_py.core.turns import TURN_ANNOTATION
from whereabouts_py.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    StoreError,
    TryAgainError,
    WhereaboutsError,
)
from whereabouts_py.metrics import daemon as metrics
from whereabouts_py.store.base import Store
from whereabouts_py.store.values import LeaseRecord, PoolMark, PoolSnapshot, pool_lease_name

log = logging.getLogger(__name__)

T = TypeVar("T")
Operation = Callable[[dict[int, Allocation]], tuple[dict[int, Allocation], Any]]
Coordination = Literal["auto", "always", "never"]

MAX_WRITE_ATTEMPTS = 40
# How long after a lost race the worker keeps coordinating (Lease or turns).
COORDINATION_WINDOW_S = 5.0
# How often a waiting worker looks at a Lease held by another node. Much shorter
# than whereabouts' leader_retry_period (500 ms): turns are short here.
LEASE_POLL_S = 0.02
# A worker gives up waiting for the Lease after this long and writes optimistically.
LEASE_WAIT_LIMIT_S = 3.0
# A watch (of a Lease, or of a pool taken in turns) runs while someone needed it
# within this long.
WATCH_IDLE_S = 30.0
# When the Lease is given back, a waiting node waits up to this long (at random)
# before it tries to take it, and does not try if another node took it meanwhile.
LEASE_STAGGER_S = 0.02
# After an attempt lost to another node, how long to wait for the watch to say who.
LEASE_CHANGE_WAIT_S = 0.25
# A node waits at most this long for its turn, then writes anyway.
TURN_WAIT_LIMIT_S = 3.0
# In a ring of several nodes, a turn's write waits until this long after the
# last write seen, for more requests to carry (see _gather).
TURN_GATHER_S = 0.015


# The coordination Lease of an IPPool (one name rule for the daemon and the reconciler).
lease_name_for = pool_lease_name


@dataclass(frozen=True)
class LeaseSettings:
    """whereabouts' leader_* settings, in seconds."""

    duration_s: float = 1.5
    renew_deadline_s: float = 1.0
    retry_period_s: float = 0.5


class _Watch(Generic[T]):
    """The current state of one object, kept by a watch while someone needs it."""

    def __init__(
        self,
        open_watch: Callable[[float], Iterator[T | None]],
        label: str,
        on_change: Callable[[T | None], None] | None = None,
    ) -> None:
        self._open = open_watch
        self._label = label
        self._on_change = on_change
        self.cond = threading.Condition()
        self.seq = 0  # changes seen
        self.record: T | None = None
        self.synced = False  # record is the object's state (the watch runs and has said it)
        self.running = False
        self.failed = False  # not allowed to watch: callers look for themselves
        self._wanted_until = 0.0

    def latest(self) -> tuple[int, bool, T | None]:
        with self.cond:
            return self.seq, self.synced, self.record

    def want(self) -> None:
        """Keep (or start) the watch: someone needs the object's state now."""
        with self.cond:
            self._wanted_until = time.monotonic() + WATCH_IDLE_S
            if not self.running and not self.failed:
                self.running = True
                threading.Thread(target=self._run, name=self._label, daemon=True).start()

    def wait_change(self, seen: int, until: float) -> None:
        """Wait until a change after event ``seen``, or until ``until`` (monotonic)."""
        with self.cond:
            while self.seq == seen and not self.failed:
                remaining = until - time.monotonic()
                if remaining <= 0:
                    return
                self.cond.wait(remaining)

    def _run(self) -> None:
        try:
            while time.monotonic() < self._wanted_until:
                try:
                    for record in self._open(WATCH_IDLE_S):
                        if self._on_change is not None:  # before anyone waiting is woken
                            self._on_change(record)
                        with self.cond:
                            self.record, self.synced = record, True
                            self.seq += 1
                            self.cond.notify_all()
                        if time.monotonic() >= self._wanted_until:
                            break
                except ForbiddenError as error:
                    log.info("%s: cannot watch it (%s); looking instead", self._label, error)
                    self.failed = True
                    return
                except WhereaboutsError as error:
                    log.debug("%s: watch ended: %s", self._label, error)
                    time.sleep(random.uniform(0.1, 0.3))
                finally:
                    with self.cond:
                        self.synced = False
        finally:
            with self.cond:
                self.running = False
                self.cond.notify_all()


_UNKNOWN: Any = object()  # "read the Lease", as opposed to a state the watch gave


@dataclass
class _Pending:
    operation: Operation
    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None
    cancelled: bool = False
    passing: bool = False  # only hands on a turn; nobody waits for it


def _older(version: str | None, than: str) -> bool:
    """Whether resourceVersion ``version`` is older than ``than``.

    resourceVersions are opaque; etcd's are increasing integers, and this
    only decides which of two reads to keep (every write is still a
    compare-and-swap). Anything else counts as not older.
    """
    if version is None or not version.isdigit() or not than.isdigit():
        return False
    return int(version) < int(than)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _turn_of(snapshot: PoolSnapshot | PoolMark | None) -> turns.Turn:
    """The turn a read of the pool, or its watch, states."""
    if snapshot is None:
        return turns.OPEN
    if isinstance(snapshot, PoolMark):
        return turns.parse(snapshot.annotations.get(TURN_ANNOTATION))
    annotations = snapshot.metadata.get("annotations") or {}
    return turns.parse(annotations.get(TURN_ANNOTATION))


def _unchanged(allocations: dict[int, Allocation]) -> tuple[dict[int, Allocation], Any]:
    return allocations, None


class PoolWriter:
    """Serialises and batches this node's changes to one IPPool."""

    def __init__(
        self,
        store: Store,
        name: str,
        cidr: str,
        identity: str,
        *,
        lease: LeaseSettings | None = None,
        coordination: Coordination = "auto",
        linger_s: float = 0.0,
        metrics_pool: str | None = None,
        annotations: Mapping[str, str] | None = None,
        size: int | None = None,
        network: str | None = None,
        create_missing: bool = True,
        turns: bool = False,
    ) -> None:
        self.store = store
        # False for an object only someone else creates (the Go project's
        # whole-range IPPool): a change to it while it is missing fails with
        # NotFoundError instead of creating it.
        self.create_missing = create_missing
        self.name = name
        self.cidr = cidr
        self.identity = identity
        self.lease_settings = lease or LeaseSettings()
        self.coordination = coordination
        # How long an idle worker keeps the Lease, waiting for more work.
        self.linger_s = linger_s
        # Metrics are labelled by the range's pool, not by each block.
        self.metrics_pool = metrics_pool or name
        self.annotations = dict(annotations or {})  # set when the pool is created
        # For the counts in the pool's status (kubectl get ippools).
        self.size = size
        self.network = network
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._worker_running = False
        self._snapshot: PoolSnapshot | None = None
        self._contended_until = 0.0
        self._lease: LeaseRecord | None = None
        self._lease_lock = threading.Lock()
        self._elsewhere_until = 0.0
        self._lease_taken_at = 0.0
        self._lease_watch: _Watch[LeaseRecord] = _Watch(
            lambda timeout_s: store.watch_lease(self.lease_name, timeout_s), f"lease-{name}"
        )
        # Writers of one shared object take turns instead of Leases (core.turns).
        self.turns = turns
        self._pool_watch: _Watch[PoolMark] = _Watch(
            lambda timeout_s: store.watch_pool(name, timeout_s), f"watch-{name}", self._watched
        )
        # After a write of ours: the resourceVersion the watch has not shown yet
        # (its earlier events are older than what we hold).
        self._awaiting_rv: str | None = None
        self._mark: PoolMark | None = None  # the pool's version and turn, as the watch said
        self._mark_at = 0.0  # when the watch said it (monotonic)

    @property
    def lease_name(self) -> str:
        return lease_name_for(self.name)

    # --- callers ----------------------------------------------------------------------
    def run(self, operation: Operation, timeout_s: float = 20.0) -> Any:
        """Apply ``operation`` in the next batch; return its value or raise its error."""
        pending = _Pending(operation)
        self._enqueue(pending)
        if not pending.done.wait(timeout_s):
            pending.cancelled = True
            raise TryAgainError(
                f"IPPool {self.name} could not be written within {timeout_s:g}s",
                "the Kubernetes API is slow or the pool is heavily contended; retry",
            )
        if pending.error is not None:
            raise pending.error
        return pending.value

    def _enqueue(self, pending: _Pending) -> None:
        with self._cond:
            self._queue.append(pending)
            self._cond.notify()
            if not self._worker_running:
                self._worker_running = True
                threading.Thread(target=self._work, name=f"pool-{self.name}", daemon=True).start()

    def read(self) -> PoolSnapshot:
        """A fresh read of the pool (also refreshes the cached snapshot)."""
        snapshot = self.store.get_pool(self.name, self.cidr)
        with self._cond:
            self._snapshot = snapshot
        return snapshot

    def current(self) -> PoolSnapshot:
        """The pool as this node last read or wrote it while its watch runs and has
        said nothing newer (the watch drops that copy at anyone else's write), else
        a fresh read. For looking up this node's own entries: every write of them
        went through this writer, so the copy holds them."""
        _, synced, _ = self._pool_watch.latest()
        with self._cond:
            held = self._snapshot
        if synced and held is not None and held.resource_version is not None:
            return held
        return self.read()

    # --- the worker ----------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                if not self._queue and self._lease is not None and self.linger_s > 0:
                    self._cond.wait(self.linger_s)
                batch = [p for p in self._queue if not p.cancelled]
                self._queue.clear()
                if not batch:
                    self._worker_running = False
                    break
            try:
                self._process(batch)  # may add requests that arrived meanwhile to batch
            except WhereaboutsError as error:  # e.g. the API went away mid-batch
                log.warning("pool %s: batch failed: %s", self.name, error)
                self._fail(batch, error)
            except BaseException as error:  # never leave a caller waiting
                log.exception("pool %s: unexpected error in batch", self.name)
                self._fail(batch, error)
        with self._lease_lock:
            lease, self._lease = self._lease, None
            if lease is not None:
                self._give_back(lease)

    @staticmethod
    def _fail(batch: list[_Pending], error: BaseException) -> None:
        for pending in batch:
            if not pending.done.is_set():
                pending.error = error
                pending.done.set()

    def _coordinating(self) -> bool:
        if self.coordination == "never":
            return False
        return self.coordination == "always" or time.monotonic() < self._contended_until

    # --- turns (a shared object) -----------------------------------------------------------
    def _watched(self, mark: PoolMark | None) -> None:
        """The pool changed: note its version and turn, and pass a turn we cannot use."""
        with self._cond:
            if mark is None:  # deleted
                self._mark, self._snapshot = None, None
                return
            if self._awaiting_rv is not None:
                if _older(mark.resource_version, self._awaiting_rv):
                    return  # the watch has not caught up with our own write yet
                self._awaiting_rv = None
            self._mark, self._mark_at = mark, time.monotonic()
            held = self._snapshot
            if held is not None and held.resource_version != mark.resource_version:
                self._snapshot = None  # someone else wrote: read it before writing
            idle = not self._queue and not self._worker_running
        turn = _turn_of(mark)
        if self.identity in turn.ring:
            self._pool_watch.want()  # a member must see when its turn comes
            self._lease_watch.want()  # and who asks to join
        if idle and turn.next == self.identity and not turn.lapsed(_now_ms()):
            self._enqueue(_Pending(_unchanged, passing=True))

    def _known_turn(self) -> turns.Turn | None:
        """The turn as last known, without a request: from our own last write, or
        the watch if newer; None when neither has said."""
        with self._cond:
            held, mark = self._snapshot, self._mark
        if held is not None and (
            mark is None or not _older(held.resource_version, mark.resource_version)
        ):
            return _turn_of(held)
        return None if mark is None else _turn_of(mark)

    def _in_ring(self) -> bool:
        """Whether this node is in the pool's ring, as last known: a member keeps
        taking its turn after its window of coordination has run out."""
        turn = self._known_turn()
        return turn is not None and self.identity in turn.ring

    def _after_conflict(self, lost: PoolSnapshot) -> None:
        """After a lost race, wait (briefly) for the watch to say who won."""
        watch = self._pool_watch
        deadline = time.monotonic() + LEASE_CHANGE_WAIT_S
        while True:
            seen, synced, latest = watch.latest()
            if synced and latest is not None and latest.resource_version != lost.resource_version:
                return
            if time.monotonic() >= deadline:
                return
            watch.wait_change(seen, deadline)

    def _wait_turn(self) -> None:
        """Wait (bounded) until this node may write the pool without taking a turn."""
        watch = self._pool_watch
        give_up = time.monotonic() + TURN_WAIT_LIMIT_S
        asked = False
        while True:
            watch.want()
            seen, synced, _ = watch.latest()
            if not synced and not watch.failed:
                # Starting, or the pool does not exist yet (a watch says nothing then).
                watch.wait_change(seen, time.monotonic() + LEASE_CHANGE_WAIT_S)
                seen, synced, _ = watch.latest()
            # Without a watch, look at the pool itself.
            turn = self._known_turn() if synced else None
            if turn is None:
                turn = _turn_of(self.read())
            now_ms, now = _now_ms(), time.monotonic()
            if turn.may_write(self.identity, now_ms):
                return
            if now >= give_up:
                log.info("pool %s: the turn of %s was not taken; writing", self.name, turn.next)
                return
            if self.identity not in turn.ring and not asked:
                # Ask to be taken into the ring; whoever writes next will.
                self._lease_watch.want()
                asked = self._ask_for_turn()
                if not asked:
                    return  # cannot ask (no Lease rights): write out of turn
                continue
            until = min(give_up, now + max(turn.until_ms - now_ms, 0) / 1000)
            if watch.failed:
                time.sleep(random.uniform(0.5, 1.5) * LEASE_POLL_S)
            else:
                watch.wait_change(seen, until)

    def _wanting(self, now_ms: int) -> dict[str, int]:
        """The requests for a turn (node -> when), as the Lease's watch last said."""
        _, synced, record = self._lease_watch.latest()
        if not synced or record is None:
            return {}
        return turns.wants_in(record.notes, now_ms)

    def _ask_for_turn(self) -> bool:
        """Ask for a turn in the pool's Lease (True: asked), in this node's own
        annotation by a merge patch: no read first, no conflict with others asking.
        Whoever writes the pool next takes the request into the ring (core.turns)."""
        _, synced, record = self._lease_watch.latest()
        seen = record.notes if synced and record is not None else {}
        try:
            self.store.note_lease(self.lease_name, turns.ask(self.identity, _now_ms(), seen))
        except StoreError as error:
            log.info("pool %s: cannot ask for a turn (%s)", self.name, error)
            return False
        return True

    def _process(self, batch: list[_Pending]) -> None:
        for attempt in range(1, MAX_WRITE_ATTEMPTS + 1):
            coordinating = self._coordinating() or (
                self.turns and self.coordination != "never" and self._in_ring()
            )
            if coordinating:
                if self.turns:
                    self._wait_turn()
                    self._gather()
                else:
                    self._hold_lease()
                batch.extend(self._take_more())  # in place: _work must see them too
            snapshot = self._snapshot
            fresh = snapshot is None
            if snapshot is None:
                snapshot = self.store.get_pool(self.name, self.cidr)
                if coordinating:
                    batch.extend(self._take_more())  # what came while it was read
            if snapshot.resource_version is None and not self.create_missing:
                if not fresh:
                    self._snapshot = None  # confirm that it is missing
                    continue
                self._snapshot = snapshot
                self._finish(self._without_object(batch))
                return
            allocations = dict(snapshot.allocations)
            outcomes: list[tuple[_Pending, Any, BaseException | None]] = []
            for pending in batch:
                if pending.cancelled:
                    continue
                try:
                    allocations, value = pending.operation(allocations)
                except WhereaboutsError as error:
                    outcomes.append((pending, None, error))
                else:
                    outcomes.append((pending, value, None))
            marks: dict[str, str] | None = None
            unchanged = allocations == dict(snapshot.allocations)
            if self.turns:
                turn, now_ms, me = _turn_of(snapshot), _now_ms(), self.identity
                if unchanged and turn.next == me and not turn.lapsed(now_ms):
                    # Hand on a turn we cannot use; the write (a compare-and-swap)
                    # also confirms the snapshot the answers came from.
                    passed = turns.after_pass(turn, me, now_ms, wanting=self._wanting(now_ms))
                    marks = {TURN_ANNOTATION: passed.encode()}
                elif not unchanged and (coordinating or me in turn.ring):
                    written_turn = turns.after_write(
                        turn, me, now_ms, wanting=self._wanting(now_ms)
                    )
                    marks = {TURN_ANNOTATION: written_turn.encode()}
                elif unchanged and all(p.passing for p in batch):
                    self._finish(outcomes)  # the turn moved on meanwhile: nothing to pass
                    return
            if unchanged and marks is None:
                if not fresh:
                    # Nothing to write, but the answer came from a cached snapshot:
                    # confirm it against a fresh read before telling anyone.
                    self._snapshot = None
                    continue
                self._snapshot = snapshot
                self._finish(outcomes)
                return
            try:
                written = self.store.write_pool(
                    snapshot,
                    allocations,
                    annotations=self.annotations,
                    size=self.size,
                    network=self.network,
                    marks=marks,
                )
                with self._cond:
                    mark = self._mark
                    if mark is not None and _older(written.resource_version, mark.resource_version):
                        self._snapshot = None  # written over already
                    else:
                        self._snapshot = written
                        if self.turns and self._pool_watch.running:
                            self._awaiting_rv = written.resource_version
            except ConflictError:
                with self._cond:
                    self._snapshot = None
                    self._awaiting_rv = None
                metrics.CAS_CONFLICTS.labels(pool=self.metrics_pool).inc()
                if self.coordination != "never":
                    self._contended_until = time.monotonic() + COORDINATION_WINDOW_S
                if self.turns and self._pool_watch.running:
                    self._after_conflict(snapshot)  # the turn rule says who writes next
                else:
                    time.sleep(random.uniform(0, min(0.2, 0.005 * attempt)))
                continue
            except StoreError as error:
                self._snapshot = None
                for pending in batch:
                    pending.error = error
                    pending.done.set()
                return
            metrics.BATCH_SIZE.labels(pool=self.metrics_pool).observe(len(outcomes))
            self._finish(outcomes)
            return
        metrics.CAS_EXHAUSTED.labels(pool=self.metrics_pool).inc()
        failure = TryAgainError(
            f"IPPool {self.name}: lost {MAX_WRITE_ATTEMPTS} compare-and-swap races in a row",
            "the pool is heavily contended; retry",
        )
        for pending in batch:
            pending.error = failure
            pending.done.set()

    def _gather(self) -> None:
        """On a turn in a ring of several nodes, let requests gather until
        TURN_GATHER_S after the last write seen: the ring writes one turn after
        another, so each write waits a little for more to carry."""
        turn = self._known_turn()
        if turn is None or len(turn.ring) < 2:
            return
        with self._cond:
            pause = self._mark_at + TURN_GATHER_S - time.monotonic()
        if pause > 0:
            time.sleep(pause)

    def _take_more(self) -> list[_Pending]:
        with self._cond:
            more = [p for p in self._queue if not p.cancelled]
            self._queue.clear()
        return more

    def _without_object(
        self, batch: list[_Pending]
    ) -> list[tuple[_Pending, Any, BaseException | None]]:
        """Answer a batch for a missing pool that must not be created."""
        outcomes: list[tuple[_Pending, Any, BaseException | None]] = []
        for pending in batch:
            if pending.cancelled:
                continue
            try:
                updated, value = pending.operation({})
            except WhereaboutsError as error:
                outcomes.append((pending, None, error))
                continue
            if updated:  # it would write an entry
                missing = NotFoundError(f"IPPool {self.name} does not exist", "not created here")
                outcomes.append((pending, None, missing))
            else:
                outcomes.append((pending, value, None))
        return outcomes

    @staticmethod
    def _finish(outcomes: list[tuple[_Pending, Any, BaseException | None]]) -> None:
        for pending, value, error in outcomes:
            pending.value, pending.error = value, error
            pending.done.set()

    # --- the Lease -------------------------------------------------------------------------
    def try_claim(self) -> bool:
        """Hold the pool's Lease now, without waiting: False if another node holds it."""
        with self._lease_lock:
            if self._lease is not None and self._lease_fresh():
                return True
            if time.monotonic() < self._elsewhere_until:
                return False  # seen held by another node a moment ago: don't ask again
            return self._acquire_once()

    def _lease_fresh(self) -> bool:
        elapsed = time.monotonic() - self._lease_taken_at
        return elapsed < self.lease_settings.renew_deadline_s / 2

    def _acquire_once(self, known: LeaseRecord | None = _UNKNOWN) -> bool:
        """One attempt to take or renew the Lease (caller holds _lease_lock).

        ``known`` is its current state when a watch says so (None: it does not
        exist); otherwise it is read first.
        """
        settings = self.lease_settings
        try:
            if self._lease is not None:
                try:  # renew what we hold
                    self._lease = self.store.write_lease(
                        self._lease, self.lease_name, self.identity, settings.duration_s
                    )
                    self._lease_taken_at = time.monotonic()
                    return True
                except ConflictError:
                    self._lease = None
                    metrics.LEASE_LOSSES.labels(pool=self.metrics_pool).inc()
            current = self.store.get_lease(self.lease_name) if known is _UNKNOWN else known
            now = dt.datetime.now(dt.UTC)
            if current is not None and current.held_by_other(self.identity, now):
                assert current.renewed is not None
                valid_s = (current.renewed - now).total_seconds() + current.duration_s
                self._elsewhere_until = time.monotonic() + min(max(valid_s, 0.0), 1.0)
                return False
            self._lease = self.store.write_lease(
                current, self.lease_name, self.identity, settings.duration_s
            )
        except ConflictError:
            return False  # someone else took it first
        self._lease_taken_at = time.monotonic()
        metrics.LEASE_ACQUISITIONS.labels(pool=self.metrics_pool).inc()
        return True

    def _hold_lease(self) -> None:
        """Take the pool's Lease, waiting (bounded) while another node holds it."""
        give_up = time.monotonic() + LEASE_WAIT_LIMIT_S
        with self._lease_lock:
            if self._lease is not None and self._lease_fresh():
                return
            watch = self._lease_watch
            while time.monotonic() < give_up:
                seen, synced, record = watch.latest()
                try:
                    if self._acquire_once(record if synced else _UNKNOWN):
                        return
                except StoreError as error:
                    log.warning("pool %s: lease unavailable (%s); writing anyway", self.name, error)
                    return
                if watch.failed:  # no watch: look again in a moment
                    pause = min(LEASE_POLL_S, self.lease_settings.retry_period_s)
                    time.sleep(random.uniform(0.5, 1.5) * pause)
                    continue
                watch.want()
                # Another node writes this pool too: keep coordinating (else this
                # node would go back to optimistic writes, and lose races, in a moment).
                self._contended_until = time.monotonic() + COORDINATION_WINDOW_S
                # Told, not poll: until the Lease changes, or its holder's term runs out.
                now = time.monotonic()
                watch.wait_change(
                    seen, min(give_up, max(self._elsewhere_until, now + LEASE_CHANGE_WAIT_S))
                )
                changed, synced, record = watch.latest()
                if changed != seen and synced and not self._held_elsewhere(record):
                    # Given back: let the waiting nodes spread out, so that one takes
                    # it and the others see that before they try.
                    watch.wait_change(
                        changed, time.monotonic() + random.uniform(0, LEASE_STAGGER_S)
                    )
        log.info("pool %s: lease still held elsewhere; writing without it", self.name)

    def _held_elsewhere(self, record: LeaseRecord | None) -> bool:
        return record is not None and record.held_by_other(self.identity, dt.datetime.now(dt.UTC))

    def _give_back(self, lease: LeaseRecord) -> None:
        # A conflict means another node took it after it expired: nothing to give back.
        with contextlib.suppress(WhereaboutsError):  # else it expires on its own
            self.store.write_lease(lease, self.lease_name, "", self.lease_settings.duration_s)
