"""Who still owns an address: the reconciler's decisions, as pure functions.

The reconciler reads three things from the API (reservations, then pools,
then pods: that order is what makes the decisions below safe, see
``whereabouts_py.reconciler.collector``) and hands them here as plain values.
Nothing in this module does I/O.

Rules, safest first:

* An allocation whose pod is alive and lists the address in its
  ``k8s.v1.cni.cncf.io/network-status`` annotation is kept.
* A live pod with no network-status at all (IPAM used without Multus, or
  Multus has not written it yet) keeps every address it holds.
* An allocation recorded with a pod UID belongs to that pod only: when the
  pod of that name now has another UID, the recorded one is gone.
* The pod is gone or has finished (phase Succeeded or Failed): release at
  once. A pod marked for eviction (condition DisruptionTarget) is released
  once its containers have stopped: the condition is set before the graceful
  delete, while the pod still runs on its address, and handing that address
  out then would put it on the wire twice.
* The pod is alive, has a network-status, and no entry of it lists the
  address: release, but only after a grace period (the caller keeps time).

An allocation an IPAMClaim owns (``ipamclaimref``) is judged by its claim
alone, before any of the above: kept while the claim exists (or while the
claims could not be read), released once it is gone, whatever its pods do.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import netaddr

# "The same attachment" is defined once, beside ``Allocation`` (the allocator needs
# it, and this module builds on the allocator): ``same_attachment`` asks whether a
# record is an entry's attachment at all (perhaps from an older sandbox),
# ``reservation_held_by`` whether deleting it frees exactly that entry's hold.
from whereabouts_py.core.allocator import Allocation, names_a_pod, same_sandbox_attachment
from whereabouts_py.core.allocator import same_attachment as same_attachment  # noqa: PLC0414
from whereabouts_py.core.claims import is_claimed
from whereabouts_py.core.codec import pool_name, reservation_name

NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"
# The annotation's name before Multus 3.7; still read when the new one is absent.
NETWORK_STATUS_LEGACY = "k8s.v1.cni.cncf.io/networks-status"
FINISHED_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class PodState:
    """What the reconciler needs to know about one pod.

    ``listed_addresses`` is None when the pod has no (readable) network-status
    annotation, which means "unknown", never "none".
    """

    namespace: str
    name: str
    uid: str
    phase: str = ""
    disruption_target: bool = False
    # Every container reported and terminated (no running or waiting one).
    containers_stopped: bool = False
    listed_addresses: frozenset[str] | None = None
    node: str = ""
    # The k8s.v1.cni.cncf.io/networks annotation as written (claim references live there).
    networks: str | None = None

    @property
    def podref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED_PHASES


class Verdict(enum.Enum):
    """What to do with one allocation; the values label the GC metric."""

    KEEP = "keep"
    POD_DELETED = "pod_deleted"
    POD_REPLACED = "pod_replaced"
    POD_FINISHED = "pod_finished"
    POD_DISRUPTED = "pod_disrupted"
    NOT_IN_NETWORK_STATUS = "not_in_network_status"
    CLAIM_DELETED = "claim_deleted"

    @property
    def releases_now(self) -> bool:
        return self not in (Verdict.KEEP, Verdict.NOT_IN_NETWORK_STATUS)


def disruption_targeted(conditions: object) -> bool:
    """Whether a pod's ``status.conditions`` mark it for eviction (DisruptionTarget=True)."""
    if not isinstance(conditions, list):
        return False
    return any(
        isinstance(condition, Mapping)
        and condition.get("type") == "DisruptionTarget"
        and condition.get("status") == "True"
        for condition in conditions
    )


def canonical_address(text: str) -> str | None:
    """``10.0.0.5``, ``10.0.0.5/24`` or any IPv6 spelling -> one canonical form."""
    try:
        return str(netaddr.IPAddress(text.split("/", 1)[0].strip()))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None


def parse_network_status(text: str | None) -> frozenset[str] | None:
    """Every address a network-status annotation lists, or None when there is none.

    A malformed annotation reads as absent: it cannot prove that the pod does
    not use an address, and only proof may release a live pod's address.
    """
    if text is None:
        return None
    try:
        entries = json.loads(text)
    except (ValueError, TypeError):
        return None
    if not isinstance(entries, list):
        return None
    listed: set[str] = set()
    for entry in entries:
        if not isinstance(entry, Mapping):
            return None
        ips = entry.get("ips", [])
        if not isinstance(ips, list):
            return None
        for ip in ips:
            address = canonical_address(ip) if isinstance(ip, str) else None
            if address is not None:
                listed.add(address)
    return frozenset(listed)


def network_status_of(annotations: Mapping[str, str]) -> frozenset[str] | None:
    text = annotations.get(NETWORK_STATUS)
    if text is None:
        text = annotations.get(NETWORK_STATUS_LEGACY)
    return parse_network_status(text)


def judge(
    address: str,
    allocation: Allocation,
    pod: PodState | None,
    claims: Collection[str] | None = None,
) -> Verdict:
    """The verdict for one allocation, given the pod its podref names now (or None).

    ``claims`` are the IPAMClaims that exist (``namespace/name``), or None
    when they are not known: then every claim-owned allocation is kept.
    """
    if is_claimed(allocation.ipam_claim):
        if claims is None or allocation.ipam_claim in claims:
            return Verdict.KEEP
        return Verdict.CLAIM_DELETED
    if not names_a_pod(allocation.podref):
        return Verdict.KEEP  # no pod identity: nothing to check it against
    if pod is None:
        return Verdict.POD_DELETED
    if allocation.pod_uid and allocation.pod_uid != pod.uid:
        return Verdict.POD_REPLACED
    if pod.finished:
        return Verdict.POD_FINISHED
    if pod.disruption_target and pod.containers_stopped:
        return Verdict.POD_DISRUPTED
    if pod.listed_addresses is None:
        return Verdict.KEEP
    canonical = canonical_address(address)
    if canonical is not None and canonical in pod.listed_addresses:
        return Verdict.KEEP
    return Verdict.NOT_IN_NETWORK_STATUS


# --- where entries live -------------------------------------------------------------


def network_name_of(pool: str, cidr: str) -> str | None:
    """The ``network_name`` a pool was named with; ValueError if the name does not fit.

    Pools are named ``[<network_name>-]<range>`` (``codec.pool_name``); the
    reservation of an entry carries the same prefix.
    """
    plain = pool_name(cidr)
    if pool == plain:
        return None
    if pool.endswith(f"-{plain}") and len(pool) > len(plain) + 1:
        return pool[: -len(plain) - 1]
    raise ValueError(f"IPPool {pool} is not named after its range {cidr}")


def address_at(cidr: str, offset: int) -> str:
    """The address of an entry: the range's network address plus the key."""
    network = netaddr.IPNetwork(cidr)
    return str(netaddr.IPAddress(int(network.network) + offset, network.version))


@dataclass(frozen=True)
class HeldEntry:
    """One pool entry with everything derived from it."""

    pool: str
    cidr: str
    offset: int
    allocation: Allocation
    address: str
    network_name: str | None
    reservation: str  # name of its OverlappingRangeIPReservation

    @property
    def key(self) -> tuple[str, int, Allocation]:
        """Identity of the entry: the same holder at the same place."""
        return (self.pool, self.offset, self.allocation)


def entries_of(pool: str, cidr: str, allocations: Mapping[int, Allocation]) -> list[HeldEntry]:
    """The entries of one IPPool; ValueError if its name or range cannot be read."""
    try:
        network_name = network_name_of(pool, cidr)
    except (netaddr.AddrFormatError, TypeError) as error:
        raise ValueError(f"IPPool {pool} has an unreadable range {cidr!r}") from error
    held = []
    for offset, allocation in sorted(allocations.items()):
        address = address_at(cidr, offset)
        held.append(
            HeldEntry(
                pool=pool,
                cidr=cidr,
                offset=offset,
                allocation=allocation,
                address=address,
                network_name=network_name,
                reservation=reservation_name(address, network_name),
            )
        )
    return held


# Whether deleting a reservation frees exactly a pool entry's hold (the strict rule).
reservation_held_by = same_sandbox_attachment


# --- the sweep's plan -----------------------------------------------------------------


@dataclass(frozen=True)
class Conflict:
    """A pool entry whose address another attachment holds cluster-wide."""

    entry: HeldEntry
    holder: Allocation


@dataclass(frozen=True)
class SweepPlan:
    """What one sweep found; ``contradicted`` and the repairs still need a grace period."""

    release: list[tuple[HeldEntry, Verdict]] = field(default_factory=list)
    contradicted: list[HeldEntry] = field(default_factory=list)
    orphan_reservations: list[str] = field(default_factory=list)
    missing_reservations: list[HeldEntry] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)


def plan_sweep(
    entries: Sequence[HeldEntry],
    reservations: Mapping[str, Allocation],
    pods: Mapping[str, PodState],
    *,
    repair_reservations: bool = True,
    claims: Collection[str] | None = None,
) -> SweepPlan:
    """Decide, from one consistent-enough view, what a sweep should do.

    ``reservations`` were listed before the pools that ``entries`` come from,
    and ``pods`` (by podref) after them. ``repair_reservations`` is False
    when some pool could not be read, because then a reservation without a
    visible entry may still belong to an entry in that pool. ``claims`` are
    the IPAMClaims that exist (see ``judge``).
    """
    plan = SweepPlan()
    by_reservation: dict[str, list[HeldEntry]] = {}
    for entry in entries:
        by_reservation.setdefault(entry.reservation, []).append(entry)
        verdict = judge(entry.address, entry.allocation, pods.get(entry.allocation.podref), claims)
        if verdict.releases_now:
            plan.release.append((entry, verdict))
            continue
        if verdict is Verdict.NOT_IN_NETWORK_STATUS:
            plan.contradicted.append(entry)
            continue
        holder = reservations.get(entry.reservation)
        if holder is None:
            if repair_reservations:
                plan.missing_reservations.append(entry)
        elif not same_attachment(holder, entry.allocation):
            plan.conflicts.append(Conflict(entry, holder))
    if repair_reservations:
        plan.orphan_reservations.extend(
            sorted(name for name in reservations if name not in by_reservation)
        )
    return plan


def podrefs_of(entries: Iterable[HeldEntry]) -> set[str]:
    return {entry.allocation.podref for entry in entries if names_a_pod(entry.allocation.podref)}


# --- side by side with the Go plugin ------------------------------------------------------


@dataclass(frozen=True)
class PoolObject:
    """One IPPool as plain values: ``whole_range`` is set on a block of a large range."""

    name: str
    cidr: str
    allocations: Mapping[int, Allocation]
    whole_range: str | None = None


@dataclass(frozen=True)
class Unmirrored:
    """A block entry of ours that the Go plugin's whole-range object does not show.

    ``clash`` is who that object records at the address instead (an address
    held twice), or None when the address is merely free there: then the Go
    plugin could hand it out (it reads nothing but its whole-range object and
    reservations, and its DEL deletes a reservation without looking at it).
    """

    whole: str  # name of the whole-range IPPool
    whole_cidr: str
    offset: int  # within the whole range
    entry: HeldEntry
    clash: Allocation | None


def unmirrored_entries(objects: Iterable[PoolObject]) -> list[Unmirrored]:
    """Block entries missing from an existing whole-range IPPool of their range.

    Ranges stored as blocks have no whole-range object unless the Go plugin
    made one (it always writes there); only then do block entries need to be
    mirrored in it. Objects whose name or range cannot be read are skipped.
    """
    pools = list(objects)
    by_name = {pool.name: pool for pool in pools}
    found: list[Unmirrored] = []
    for pool in pools:
        if not pool.whole_range or pool.whole_range == pool.cidr:
            continue
        try:
            entries = entries_of(pool.name, pool.cidr, pool.allocations)
            network = network_name_of(pool.name, pool.cidr)
            whole_name = pool_name(pool.whole_range, network)
            base = int(netaddr.IPNetwork(pool.cidr).network) - int(
                netaddr.IPNetwork(pool.whole_range).network
            )
        except (ValueError, netaddr.AddrFormatError, TypeError):
            continue
        whole = by_name.get(whole_name)
        if whole is None or whole.cidr != pool.whole_range:
            continue
        for entry in entries:
            offset = base + entry.offset
            there = whole.allocations.get(offset)
            if there is not None and same_attachment(there, entry.allocation):
                continue
            found.append(Unmirrored(whole_name, whole.cidr, offset, entry, there))
    return found
