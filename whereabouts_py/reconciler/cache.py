"""The reconciler's view of IPPools and reservations, kept current by watches.

``PoolCache`` holds every IPPool and OverlappingRangeIPReservation of the
namespace as the last watch event reported it, with an index from pod
reference to the pools holding an entry of that pod. ``run_watch`` keeps
one collection current: it LISTs it (one consistent snapshot and its
resourceVersion), then WATCHes from that version, and lists again when the
server answers 410 Gone (the history since that version is compacted) or
the watch breaks. Every replica keeps its cache warm, leader or not.

Nothing is ever freed on the cache's word alone; see ``collector.py``: a
cached object is only the *precondition* of a compare-and-swap write, so
a stale one makes the write fail (409) and the collector reads the object
afresh. A cache without watches (``PoolCache.listed``) serves callers that
want one pass against a fresh listing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import TypeVar

from whereabouts_py.errors import NotFoundError, WhereaboutsError
from whereabouts_py.store.base import Store
from whereabouts_py.store.kube import KubeStore, WatchEvent
from whereabouts_py.store.values import PoolSnapshot, Reservation

log = logging.getLogger(__name__)

# How long one watch request stays open before it is opened again from its last version.
WATCH_TIMEOUT_S = 240.0
# The longest wait before a failed listing or watch is tried again.
RETRY_MAX_S = 10.0
# How often a watch of a resource the API does not serve looks again.
ABSENT_S = 10.0

T = TypeVar("T")


class PoolCache:
    """IPPools (with a pod reference index) and reservations, as last reported."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[str, PoolSnapshot] = {}
        self._by_pod: dict[str, set[str]] = {}  # podref -> names of pools with its entries
        self._reservations: dict[str, Reservation] = {}
        self.pools_synced = threading.Event()
        self.reservations_synced = threading.Event()
        # True for a one-off listing just made: its pools need no second read.
        self.fresh = False

    @classmethod
    def listed(cls, store: Store) -> PoolCache:
        """A one-off cache of the pools as listed now; reservations unknown (read when needed)."""
        cache = cls()
        cache.replace_pools(store.list_pools())
        cache.fresh = True
        return cache

    # --- fed by the watches ---------------------------------------------------------------
    def replace_pools(self, pools: Iterable[PoolSnapshot]) -> None:
        with self._lock:
            self._pools, self._by_pod = {}, {}
            for pool in pools:
                self._put_pool(pool)
        self.pools_synced.set()

    def put_pool(self, pool: PoolSnapshot) -> None:
        with self._lock:
            self._drop_pool(pool.name)
            self._put_pool(pool)

    def drop_pool(self, name: str) -> None:
        with self._lock:
            self._drop_pool(name)

    def replace_reservations(self, reservations: Iterable[Reservation]) -> None:
        with self._lock:
            self._reservations = {item.name: item for item in reservations}
        self.reservations_synced.set()

    def put_reservation(self, reservation: Reservation) -> None:
        with self._lock:
            self._reservations[reservation.name] = reservation

    def drop_reservation(self, name: str) -> None:
        with self._lock:
            self._reservations.pop(name, None)

    def _put_pool(self, pool: PoolSnapshot) -> None:
        self._pools[pool.name] = pool
        for holder in pool.allocations.values():
            self._by_pod.setdefault(holder.podref, set()).add(pool.name)

    def _drop_pool(self, name: str) -> None:
        old = self._pools.pop(name, None)
        if old is None:
            return
        for holder in old.allocations.values():
            names = self._by_pod.get(holder.podref)
            if names is not None:
                names.discard(name)
                if not names:
                    del self._by_pod[holder.podref]

    # --- read by the collector -------------------------------------------------------------
    def pools(self) -> list[PoolSnapshot]:
        with self._lock:
            return list(self._pools.values())

    def pool(self, name: str) -> PoolSnapshot | None:
        with self._lock:
            return self._pools.get(name)

    def pools_holding(self, podrefs: Collection[str]) -> list[PoolSnapshot]:
        """The pools with at least one entry of one of ``podrefs`` (from the index)."""
        with self._lock:
            names = set().union(*(self._by_pod.get(podref, set()) for podref in podrefs))
            return [self._pools[name] for name in sorted(names) if name in self._pools]

    def holds(self, podref: str) -> bool:
        with self._lock:
            return podref in self._by_pod

    def reservations(self) -> list[Reservation]:
        with self._lock:
            return list(self._reservations.values())

    def reservation(self, name: str) -> Reservation | None:
        """The cached reservation; None when absent or when reservations are not watched."""
        with self._lock:
            return self._reservations.get(name)

    def counts(self) -> tuple[int, int, int]:
        """Pools, entries and reservations cached (for logs and tests)."""
        with self._lock:
            entries = sum(len(pool.allocations) for pool in self._pools.values())
            return len(self._pools), entries, len(self._reservations)


def run_watch(
    what: str,
    *,
    list_at: Callable[[], tuple[list[T], str]],
    watch: Callable[[str, float], Iterator[WatchEvent[T]]],
    replace: Callable[[list[T]], None],
    put: Callable[[T], None],
    drop: Callable[[T], None],
    stop: threading.Event,
    timeout_s: float = WATCH_TIMEOUT_S,
) -> None:
    """LIST then WATCH one collection into a cache until ``stop``; list again on 410 or errors."""
    retry_s = 0.5
    absent = False
    while not stop.is_set():
        try:
            items, version = list_at()
            if absent:
                log.info("%s: served now", what)
                absent = False
            replace(items)
            log.info("%s listed: %d objects at resourceVersion %s", what, len(items), version)
            retry_s = 0.5
            while not stop.is_set():
                expired = False
                for event in watch(version, timeout_s):
                    if stop.is_set():
                        return
                    if event.kind == "EXPIRED":
                        expired = True
                        break
                    version = event.resource_version or version
                    if event.value is not None:
                        if event.kind == "DELETED":
                            drop(event.value)
                        else:
                            put(event.value)
                if expired:
                    log.info("%s watch expired at resourceVersion %s: listing again", what, version)
                    break
        except NotFoundError as error:
            # The resource is not served (a CRD not installed yet, e.g. IPAMClaims
            # before KubeVirt): look again now and then, and start once it is.
            if not absent:
                log.info("%s: not served (%s); looking again every %.0f s", what, error, ABSENT_S)
            absent = True
            if stop.wait(ABSENT_S):
                return
            continue
        except WhereaboutsError as error:
            log.warning("%s watch failed, listing again in %.1f s: %s", what, retry_s, error)
        except Exception:  # a bug must not end the thread: the cache would go stale silently
            log.exception("%s watch failed unexpectedly, listing again in %.1f s", what, retry_s)
        if stop.wait(retry_s):
            return
        retry_s = min(retry_s * 2, RETRY_MAX_S)


def watch_thread(
    what: str,
    name: str,
    stop: threading.Event,
    *,
    list_at: Callable[[], tuple[list[T], str]],
    watch: Callable[[str, float], Iterator[WatchEvent[T]]],
    replace: Callable[[list[T]], None],
    put: Callable[[T], None],
    drop: Callable[[T], None],
) -> threading.Thread:
    """A thread (not started) that runs ``run_watch`` for one collection."""
    return threading.Thread(
        target=run_watch,
        args=(what,),
        kwargs={
            "list_at": list_at,
            "watch": watch,
            "replace": replace,
            "put": put,
            "drop": drop,
            "stop": stop,
        },
        name=name,
        daemon=True,
    )


def watch_threads(
    store: KubeStore, cache: PoolCache, stop: threading.Event
) -> list[threading.Thread]:
    """The two threads that keep ``cache`` current (not started)."""
    return [
        watch_thread(
            "IPPools",
            "watch-ippools",
            stop,
            list_at=store.list_pools_at,
            watch=store.watch_pools,
            replace=cache.replace_pools,
            put=cache.put_pool,
            drop=lambda pool: cache.drop_pool(pool.name),
        ),
        watch_thread(
            "OverlappingRangeIPReservations",
            "watch-reservations",
            stop,
            list_at=store.list_reservations_at,
            watch=store.watch_reservations,
            replace=cache.replace_reservations,
            put=cache.put_reservation,
            drop=lambda reservation: cache.drop_reservation(reservation.name),
        ),
    ]
