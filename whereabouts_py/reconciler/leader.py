"""Leader election among reconciler replicas through one coordination.k8s.io Lease.

The Lease is taken and renewed by compare-and-swap on its resourceVersion
(``KubeStore.write_lease``), so two replicas can never both think they took
it from the same state. Expiry is judged the way client-go does it: by how
long *this* replica has watched the record stay unchanged on its own
monotonic clock, not by comparing the holder's ``renewTime`` with our wall
clock, so clock skew between nodes cannot shorten a lease.

Timing, for a lease duration D:

* the leader renews every D/5 and stops acting when it has not renewed for
  2/3 D (``renew_deadline``);
* a follower takes over once it has seen the record unchanged for D.

Because the follower starts counting no earlier than the leader's last
successful renewal, the old leader has stopped acting (2/3 D) before anyone
else starts (D). Correctness does not depend on this: every pool write is a
compare-and-swap, and two replicas releasing the same dead pod's addresses
is harmless. The election only keeps the work (and the Events) single.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from whereabouts_py.errors import ConflictError, StoreError
from whereabouts_py.store.kube import KubeStore, LeaseRecord

log = logging.getLogger(__name__)


class LeaderElection:
    """Take, keep and give up the reconciler's Lease; call back on changes."""

    def __init__(
        self,
        store: KubeStore,
        lease_name: str,
        identity: str,
        duration_s: float,
        *,
        on_started_leading: Callable[[], None] = lambda: None,
        on_stopped_leading: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.lease_name = lease_name
        self.identity = identity
        self.duration_s = duration_s
        self.retry_s = duration_s / 5
        self.renew_deadline_s = duration_s * 2 / 3
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._clock = clock
        self._leading = threading.Event()
        self._transition = threading.Lock()
        self._last_renewed = 0.0
        # What we last saw of someone else's record, and when (our clock).
        self._observed_version = ""
        self._observed_at = 0.0
        self._record: LeaseRecord | None = None

    @property
    def leading(self) -> bool:
        """True while this replica may act; re-checked before every write batch."""
        if self._leading.is_set() and self._clock() - self._last_renewed > self.renew_deadline_s:
            self._step_down("the Lease was not renewed in time")
        return self._leading.is_set()

    def run(self, stop: threading.Event) -> None:
        """Campaign and renew until ``stop`` is set; then give the Lease up."""
        while not stop.is_set():
            try:
                self.try_acquire_or_renew()
            except StoreError as error:
                log.warning("leader election: Lease %s unreadable: %s", self.lease_name, error)
            except Exception:  # a bug must not end the campaign; leading lapses by itself
                log.exception("leader election: unexpected failure")
            _ = self.leading  # steps down when the renew deadline has passed
            stop.wait(self.retry_s)
        self.release()

    def try_acquire_or_renew(self) -> bool:
        """One round: renew our Lease, or take it if free or expired. True if leading."""
        if self._leading.is_set() and self._record is not None:
            # Renew from what we wrote last: no read needed while nobody else writes.
            try:
                self._record = self.store.write_lease(
                    self._record, self.lease_name, self.identity, self.duration_s
                )
            except ConflictError:
                self._step_down("the Lease changed under us")
                return False
            self._last_renewed = self._clock()
            return True
        record = self.store.get_lease(self.lease_name)
        now = self._clock()
        if record is not None and record.holder and record.holder != self.identity:
            if record.resource_version != self._observed_version:
                self._observed_version = record.resource_version
                self._observed_at = now
            expired = now - self._observed_at >= max(record.duration_s, self.duration_s)
            if not expired:
                if self._leading.is_set():
                    self._step_down(f"Lease taken by {record.holder}")
                return False
        try:
            self._record = self.store.write_lease(
                record, self.lease_name, self.identity, self.duration_s
            )
        except ConflictError:
            # Another replica wrote first; the next round sees who.
            if self._leading.is_set():
                self._step_down("lost the race to renew the Lease")
            return False
        self._last_renewed = self._clock()
        with self._transition:
            if self._leading.is_set():
                return True
            self._leading.set()
            previous = record.holder if record is not None and record.holder else "nobody"
            log.info(
                "leader election: became leader identity=%s lease=%s previous=%s",
                self.identity,
                self.lease_name,
                previous,
            )
        self._on_started()
        return True

    def release(self) -> None:
        """Give the Lease up on shutdown so that a follower takes over at once."""
        if not self._leading.is_set() or self._record is None:
            return
        self._step_down("shutting down")
        try:
            self.store.write_lease(self._record, self.lease_name, "", self.duration_s)
        except StoreError as error:
            log.info("leader election: could not give up Lease %s: %s", self.lease_name, error)

    def _step_down(self, why: str) -> None:
        with self._transition:
            if not self._leading.is_set():
                return
            self._leading.clear()
        log.warning(
            "leader election: stopped leading identity=%s lease=%s reason=%s",
            self.identity,
            self.lease_name,
            why,
        )
        self._on_stopped()
