"""``whereabouts-py reconciler``: watches pods, one elected replica frees addresses.

Process shape. Every replica, always, watches pods cluster-wide and keeps
its IPPool and reservation caches warm (``cache.py``): one LIST (in pages,
each pod cut down to its name, UID, phase and conditions as it arrives)
then one WATCH per collection, threads of our own; IPAMClaims are watched
the same way (a deletion queues the claim; while the CRD is not installed
the watch looks for it every few seconds, so KubeVirt may come later). Next
to them run kopf (standalone, no KopfPeering; it carries the loop heartbeat
and the login), the leader election (``leader.py``), the event worker, the
sweeper and the status refresher. Only the event worker, the sweeper and the
status refresher write, and only while this replica leads; a follower drops
the pod events it sees. A takeover needs no start-up (login, discovery,
listings): the follower's watches are already warm. What it misses as a
follower, the sweep it runs on taking the lead catches (pods gone, finished
or evicted meanwhile). Pods are watched by our own thread rather than by a
kopf handler because kopf holds every listed pod's whole body (and a worker
per pod) in memory: at 10,000 pods that alone was over 100 MB.

Event path. The pod watch only filters and queues (``PodWatch``): a pod that
was deleted, has phase Succeeded or Failed, or has the condition
DisruptionTarget puts its ``namespace/name`` in a set (with, for a deletion,
the UID the apiserver reported deleted). The event worker takes the whole set
at once and hands it to ``GarbageCollector.release_for_pods``, which finds
those pods' entries through the pod index of the watched IPPool cache and
judges each against the pod as it is now (so the UID tells an old pod from
its same-name successor). A pod deletion costs a GET per pool holding its
entries and a conditional write per reservation and per pool, whatever the
number of pools. A pod the cache shows no entry of is looked at once more
after ``CACHE_LAG_S`` (its ADD's pool write may not have reached the watch
yet). Failed attempts are retried a few times, then left to the next sweep.

kopf's part. It logs in and beats the loop heartbeat that /healthz reads
(start-up and clean-up handlers), and handles the signals; it watches no
resource, so it never patches a pod or a claim, adds no finalizer, writes no
annotation and no status. Its own Kubernetes Events are switched off (we post
ours through the store), and so is its scanning of CRDs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import kopf

from whereabouts_py.core.ownership import disruption_targeted
from whereabouts_py.errors import ConfigError, WhereaboutsError
from whereabouts_py.metrics import reconciler as metrics
from whereabouts_py.metrics.health import Check, Heartbeat, succeeds
from whereabouts_py.reconciler.cache import PoolCache, watch_thread, watch_threads
from whereabouts_py.reconciler.collector import GarbageCollector
from whereabouts_py.reconciler.leader import LeaderElection
from whereabouts_py.reconciler.schedule import CronSchedule, parse_cron
from whereabouts_py.store.flatfile import read_flat_file
from whereabouts_py.store.kube import KubeStore, connect

log = logging.getLogger("whereabouts_py.reconciler")

LEASE_NAME = "whereabouts-py-reconciler"
# How often one pod's release is retried by the event worker before the sweep takes over.
EVENT_ATTEMPTS = 3
EVENT_RETRY_DELAY_S = 1.0
# kopf's loop beats this often; /healthz fails once it has not for LOOP_STALL_S
# (which also leaves kopf that long to start).
LOOP_BEAT_S = 1.0
LOOP_STALL_S = 30.0
# The longest wait before a failed sweep is tried again (never longer than the interval).
SWEEP_RETRY_MAX_S = 30.0
# How often the leader checks (in the cache) that every pool's status counts are current.
STATUS_REFRESH_S = 5.0
# A pod with no entry in the cache is looked at again this much later, once: the
# watch of IPPools may deliver its ADD's write after the pod watch delivered its deletion.
CACHE_LAG_S = 2.0
# Queued IPAMClaims (namespace/name) carry this prefix, next to queued pods.
CLAIM_KEY_PREFIX = "ipamclaim:"


# --- the event path -------------------------------------------------------------------------


def releases_addresses(event: Mapping[str, Any]) -> bool:
    """Whether a pod watch event means the pod's addresses may be free now."""
    body = event.get("object") or {}
    if event.get("type") == "DELETED":
        return True
    status = body.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return True
    return disruption_targeted(status.get("conditions"))


class PendingPods:
    """Pods (``namespace/name``) and deleted IPAMClaims (``CLAIM_KEY_PREFIX`` +
    ``namespace/name``) waiting for the event worker, deduplicated."""

    def __init__(self) -> None:
        self._pending: dict[str, int] = {}  # podref -> attempts made
        # podref -> UIDs the apiserver reported deleted (DELETED events): gone for good.
        self._deleted: dict[str, set[str]] = {}
        self._ready = threading.Condition()

    def put(self, podref: str, attempts: int = 0, deleted_uid: str = "") -> None:
        with self._ready:
            self._pending[podref] = max(attempts, self._pending.get(podref, 0))
            if deleted_uid:
                self._deleted.setdefault(podref, set()).add(deleted_uid)
            self._ready.notify()

    def take_all(self, timeout_s: float) -> tuple[dict[str, int], dict[str, set[str]]]:
        """Everything queued (podref -> attempts made), with the deleted UIDs known
        for those pods; both forgotten here at once (a follower drops them)."""
        with self._ready:
            if not self._pending:
                self._ready.wait(timeout_s)
            taken, self._pending = self._pending, {}
            deleted, self._deleted = self._deleted, {}
            return taken, deleted


def run_event_worker(
    pending: PendingPods,
    collector: GarbageCollector,
    election: LeaderElection,
    stop: threading.Event,
    lag_s: float = CACHE_LAG_S,
) -> None:
    # podref -> (when to look again, deleted UIDs): pods the cache showed no entry of.
    later: dict[str, tuple[float, set[str]]] = {}
    while not stop.is_set():
        batch, deleted = pending.take_all(timeout_s=min(0.5, lag_s) if later else 0.5)
        now = time.monotonic()
        again = {podref: uids for podref, (due, uids) in later.items() if due <= now}
        for podref in again:
            del later[podref]
            batch.setdefault(podref, EVENT_ATTEMPTS - 1)  # looked at once more, no retries
        if not batch:
            continue
        if not election.leading:
            continue  # the next leader's first sweep covers these
        claims = [key.removeprefix(CLAIM_KEY_PREFIX) for key in batch if _is_claim_key(key)]
        pods = [key for key in batch if not _is_claim_key(key)]
        for podref, uids in again.items():
            deleted.setdefault(podref, set()).update(uids)
        cache = collector.cache
        if cache is not None:
            for podref in pods:
                if batch[podref] == 0 and not cache.holds(podref):
                    later.setdefault(podref, (now + lag_s, set(deleted.get(podref, ()))))
        try:
            if pods:
                collector.release_for_pods(pods, deleted)
            if claims:
                collector.release_for_claims(claims)
            continue
        except WhereaboutsError as error:
            log.warning("releasing for pods %s failed: %s", sorted(batch), error)
        except Exception:  # a bug must not end the thread: log it, the sweep covers the pods
            log.exception("releasing for pods %s failed unexpectedly", sorted(batch))
        metrics.count_failure("event")
        retry = {podref: n + 1 for podref, n in batch.items() if n + 1 < EVENT_ATTEMPTS}
        if retry:
            stop.wait(EVENT_RETRY_DELAY_S)
            for podref, attempts in retry.items():
                for uid in deleted.get(podref, {""}):
                    pending.put(podref, attempts, uid)


def _is_claim_key(key: str) -> bool:
    return key.startswith(CLAIM_KEY_PREFIX)


# --- the sweeper ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepSchedule:
    """Every ``interval_s`` seconds, or at the times of a cron expression."""

    interval_s: float = 300.0
    cron: CronSchedule | None = None

    def seconds_to_next(self) -> float:
        if self.cron is None:
            return self.interval_s
        return max(self.cron.seconds_until_next(dt.datetime.now(dt.UTC)), 1.0)

    def describe(self) -> str:
        return f"cron '{self.cron.expression}'" if self.cron else f"every {self.interval_s:g}s"


def run_sweeper(
    collector: GarbageCollector,
    election: LeaderElection,
    schedule: SweepSchedule,
    sweep_now: threading.Event,
    stop: threading.Event,
) -> None:
    """Sweep on taking the lead (``sweep_now``) and as ``schedule`` says while leading.

    A failed sweep is retried soon, backing off from 1 s to ``SWEEP_RETRY_MAX_S``.
    """
    retry_s = 1.0
    while not stop.is_set():
        interval_s = schedule.seconds_to_next()
        sweep_now.wait(interval_s)
        sweep_now.clear()
        if stop.is_set():
            return
        if not election.leading:
            continue
        try:
            collector.sweep()
            retry_s = 1.0
            continue
        except WhereaboutsError as error:
            log.warning("sweep failed, retrying in %.0f s: %s", min(retry_s, interval_s), error)
        except Exception:  # a bug must not end the thread
            log.exception("sweep failed unexpectedly, retrying in %.0f s", retry_s)
        metrics.count_failure("sweep")
        delay_s = min(retry_s, interval_s)
        retry_s = min(retry_s * 2, SWEEP_RETRY_MAX_S)
        if not stop.wait(delay_s):
            sweep_now.set()


# --- pool status ---------------------------------------------------------------------------


def run_status_refresher(
    store: KubeStore,
    election: LeaderElection,
    stop: threading.Event,
    period_s: float,
    cache: PoolCache,
) -> None:
    """Keep the counts ``kubectl get ippools`` shows current, within ``period_s``.

    The daemon writes them with every change; this catches pools written by
    anyone else (the Go project rewrites pools without our status fields).
    It looks in the watched cache, so a quiet cluster costs no request; a
    stale cached pool only costs a failed conditional write.
    """
    while not stop.wait(period_s):
        if not election.leading or not cache.pools_synced.is_set():
            continue
        stale = [pool for pool in cache.pools() if not pool.status_current]
        for pool in stale:
            try:
                store.write_pool(pool, pool.allocations)  # its watch event updates the cache
            except WhereaboutsError as error:  # changed meanwhile: its writer set the status
                log.debug("status of IPPool %s not refreshed: %s", pool.name, error)


# --- kopf ---------------------------------------------------------------------------------


def operator_settings() -> kopf.OperatorSettings:
    """kopf watches no resource here: no scanning of CRDs, no Events of its own."""
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False
    settings.scanning.disabled = True
    return settings


class PodWatch:
    """Queues the pods whose addresses may be free, from a LIST then WATCH of all pods.

    Fed by ``cache.run_watch`` with pod summaries (``KubeStore.list_pod_summaries_at``,
    read in pages and cut down to metadata and status as they arrive), so
    that no pod is held in memory: a listing queues the pods that are
    finished or evicted, a change queues them too, and a deletion queues the
    pod with the UID the apiserver reported deleted.
    """

    def __init__(self, pending: PendingPods, election: LeaderElection) -> None:
        self.pending = pending
        self.election = election
        self.established = threading.Event()

    def listed(self, pods: list[dict[str, Any]]) -> None:
        for pod in pods:
            self._consider({"object": pod})
        if not self.established.is_set():
            self.established.set()
            log.info("pod watch established (listed %d pods)", len(pods))

    def changed(self, pod: dict[str, Any]) -> None:
        self._consider({"type": "MODIFIED", "object": pod})

    def deleted(self, pod: dict[str, Any]) -> None:
        self._consider({"type": "DELETED", "object": pod})

    def _consider(self, event: dict[str, Any]) -> None:
        if not releases_addresses(event):
            return
        metadata = event["object"].get("metadata") or {}
        podref = f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
        if not self.election.leading:
            log.debug("follower: not acting on pod %s", podref)
            return
        log.debug("pod %s: %s", podref, event.get("type") or "listed")
        gone = str(metadata.get("uid") or "") if event.get("type") == "DELETED" else ""
        self.pending.put(podref, deleted_uid=gone)


def build_registry(
    kubeconfig: str | None, heartbeat: Heartbeat | None = None
) -> kopf.OperatorRegistry:
    """kopf handlers: log in, and beat ``heartbeat`` from kopf's event loop (so
    /healthz fails when that loop is stuck)."""
    registry = kopf.OperatorRegistry()
    beating: set[asyncio.Task[None]] = set()

    if heartbeat is not None:
        beat = heartbeat

        async def beat_forever() -> None:
            while True:
                beat.beat()
                await asyncio.sleep(LOOP_BEAT_S)

        @kopf.on.startup(registry=registry, id="heartbeat")
        async def start_heartbeat(**_: Any) -> None:
            beating.add(asyncio.get_running_loop().create_task(beat_forever()))

        @kopf.on.cleanup(registry=registry, id="heartbeat-stop")
        async def stop_heartbeat(**_: Any) -> None:
            for task in beating:
                task.cancel()

    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if kubeconfig:
            return kopf.login_with_kubeconfig(**kwargs)
        return in_cluster_connection(kopf.login_with_service_account(**kwargs))

    return registry


# --- the process ----------------------------------------------------------------------------


class ReconcilerProcess:
    """One replica: the leader election, the event worker, the sweeper, and kopf."""

    def __init__(
        self,
        store: KubeStore,
        *,
        identity: str,
        schedule: SweepSchedule,
        lease_duration_s: float,
        grace_period_s: float,
    ) -> None:
        self.store = store
        self.identity = identity
        self.schedule = schedule
        self.stop = threading.Event()
        self.sweep_now = threading.Event()
        self.pending = PendingPods()
        self.election = LeaderElection(
            store,
            LEASE_NAME,
            identity,
            lease_duration_s,
            on_started_leading=self._started_leading,
            on_stopped_leading=self._stopped_leading,
        )
        # Beaten from kopf's event loop; the threads next to it are checked alive.
        self.loop_heartbeat = Heartbeat(LOOP_STALL_S)
        self.threads: list[threading.Thread] = []
        self.cache = PoolCache()
        self.collector = GarbageCollector(
            store,
            grace_period_s=grace_period_s,
            leading=lambda: self.election.leading,
            instance=identity,
            cache=self.cache,
        )

    def _started_leading(self) -> None:
        metrics.set_leader(True)
        metrics.LEASE_ACQUISITIONS.inc()
        self.collector.forget()  # what it saw in an earlier term may have changed since
        self.sweep_now.set()  # catch what happened while nobody (or someone else) led

    def _stopped_leading(self) -> None:
        metrics.set_leader(False)
        metrics.LEASE_LOSSES.inc()
        metrics.publish_pools([])  # only the leader's pool gauges are current

    def liveness(self) -> dict[str, Check]:
        """/healthz: kopf's loop goes round and no thread of ours has ended."""

        def threads_alive() -> str | None:
            ended = [thread.name for thread in self.threads if not thread.is_alive()]
            return f"thread(s) ended: {', '.join(ended)}" if ended else None

        return {"operator-loop": self.loop_heartbeat.check, "threads": threads_alive}

    def _claim_deleted(self, ref: str) -> None:
        """An IPAMClaim is gone: the leader releases what it owned."""
        if not self.election.leading:
            log.debug("follower: not acting on IPAMClaim %s", ref)
            return
        log.info("IPAMClaim %s deleted: releasing what it owned", ref)
        self.pending.put(CLAIM_KEY_PREFIX + ref)

    def run(self, kubeconfig: str | None) -> None:
        """Until SIGTERM/SIGINT, which kopf handles (so it runs in the main thread)."""
        metrics.set_leader(False)
        pods = PodWatch(self.pending, self.election)
        threads = [
            *watch_threads(self.store, self.cache, self.stop),
            watch_thread(
                "Pods",
                "watch-pods",
                self.stop,
                list_at=self.store.list_pod_summaries_at,
                watch=self.store.watch_pod_summaries,
                replace=pods.listed,
                put=pods.changed,
                drop=pods.deleted,
            ),
            watch_thread(
                "IPAMClaims",
                "watch-ipamclaims",
                self.stop,
                list_at=self.store.list_ipam_claim_refs_at,
                watch=self.store.watch_ipam_claim_refs,
                replace=_ignore,
                put=_ignore,
                drop=self._claim_deleted,
            ),
            threading.Thread(
                target=self.election.run, args=(self.stop,), name="leader-election", daemon=True
            ),
            threading.Thread(
                target=run_event_worker,
                args=(self.pending, self.collector, self.election, self.stop),
                name="event-worker",
                daemon=True,
            ),
            threading.Thread(
                target=run_status_refresher,
                args=(self.store, self.election, self.stop, STATUS_REFRESH_S, self.cache),
                name="status-refresher",
                daemon=True,
            ),
            threading.Thread(
                target=run_sweeper,
                args=(
                    self.collector,
                    self.election,
                    self.schedule,
                    self.sweep_now,
                    self.stop,
                ),
                name="sweeper",
                daemon=True,
            ),
        ]
        self.threads = threads
        for thread in threads:
            thread.start()
        try:
            kopf.run(
                registry=build_registry(kubeconfig, self.loop_heartbeat),
                settings=operator_settings(),
                standalone=True,
                clusterwide=True,
            )
        finally:
            self.stop.set()
            self.sweep_now.set()
            deadline = time.monotonic() + 5.0
            for thread in threads:  # the election gives the Lease up on its way out
                thread.join(max(0.0, deadline - time.monotonic()))
            log.info("reconciler %s stopped", self.identity)


def sweep_schedule(interval_s: float | None, configuration_path: str | None) -> SweepSchedule:
    """--sweep-interval when given, else the flat file's reconciler_cron_expression, else 300 s."""
    if interval_s is not None:
        if interval_s <= 0:
            raise ConfigError(
                "--sweep-interval", interval_s, "must be a positive number of seconds"
            )
        return SweepSchedule(interval_s=interval_s)
    expression = read_flat_file(configuration_path).get("reconciler_cron_expression")
    if expression is None:
        return SweepSchedule()
    return SweepSchedule(cron=parse_cron(expression))


def run_reconciler(
    *,
    kubeconfig: str | None,
    namespace: str,
    metrics_address: str | None,
    sweep_interval_s: float | None,
    identity: str | None,
    configuration_path: str | None = None,
    lease_duration_s: float = 5.0,
    grace_period_s: float = 60.0,
    log_level: str = "info",
    lease_namespace: str | None = None,
) -> int:
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if log_level != "debug":
        # kopf logs every successful handler call at INFO: one line per pod event.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    identity = identity or socket.gethostname()
    if kubeconfig:
        # kopf's own kubeconfig login reads the file that KUBECONFIG names.
        os.environ["KUBECONFIG"] = kubeconfig
    schedule = sweep_schedule(sweep_interval_s, configuration_path)
    store = KubeStore(connect(kubeconfig), namespace, lease_namespace)
    process = ReconcilerProcess(
        store,
        identity=identity,
        schedule=schedule,
        lease_duration_s=lease_duration_s,
        grace_period_s=grace_period_s,
    )
    if metrics_address:
        metrics.serve(
            metrics_address,
            live=process.liveness(),
            ready={"kubernetes-api": succeeds(store.ping)},
        )
    log.info(
        "reconciler identity=%s namespace=%s lease=%s/%s lease_duration=%.1fs "
        "sweeps=%s grace_period=%.1fs API=%s",
        identity,
        namespace,
        store.lease_namespace,
        LEASE_NAME,
        lease_duration_s,
        schedule.describe(),
        grace_period_s,
        store.ping(),
    )
    process.run(kubeconfig)
    return 0


def in_cluster_connection(
    info: kopf.ConnectionInfo | None, environ: Mapping[str, str] = os.environ
) -> kopf.ConnectionInfo | None:
    """The service-account connection, to the address the kubelet gives every pod.

    kopf's own in-cluster login names ``https://kubernetes.default.svc``,
    which needs cluster DNS; like client-go (and our daemon), dial
    ``KUBERNETES_SERVICE_HOST``:``KUBERNETES_SERVICE_PORT`` when they are set.
    """
    host = environ.get("KUBERNETES_SERVICE_HOST", "").strip()
    if info is None or not host:
        return info
    port = environ.get("KUBERNETES_SERVICE_PORT", "443").strip() or "443"
    bracketed = f"[{host}]" if ":" in host else host
    return replace(info, server=f"https://{bracketed}:{port}")


def _ignore(_: object) -> None:
    """Claims that exist need nothing: only their deletion frees addresses."""
