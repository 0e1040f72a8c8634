"""The IPAM verbs on this node: where allocation policy meets the store.

ADD reserves one address per configured range, all or nothing: a failure in a
later range gives back what earlier ranges reserved in this call. Order of
writes keeps the pools consistent through any crash:

* ADD writes the pool entry first, then the cluster-wide reservation
  (OverlappingRangeIPReservation). A crash in between leaves a pool entry
  without reservation, which the reconciler repairs; never the reverse.
* DEL and GC delete the reservation first, then the pool entry, for the
  same reason.

The pool entry is the arbiter inside one range (compare-and-swap on the
IPPool); the reservation object is the arbiter across overlapping ranges
(create fails when another pod holds it).

Persistent addresses (IPAMClaim): when the network's configuration has
``"allowPersistentIPs": true`` and the pod's networks annotation names an
IPAMClaim for this attachment, the addresses belong to the claim
(``ipamclaimref``): every pod that references it gets them, DEL, GC and a
failed ADD leave them, and the claim's ``status.ips`` lists them. Only the
claim's deletion frees them (the reconciler).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import netaddr

from whereabouts_py.core.addresses import AddressRange
from whereabouts_py.core.allocator import (
    Allocation,
    assign,
    names_a_pod,
    release,
    same_claim,
    same_container_interface,
    same_pod_interface,
    same_sandbox_attachment,
)
from whereabouts_py.core.claims import (
    CLAIM_REFERENCE_KEY,
    NETWORKS_ANNOTATION,
    ClaimState,
    allows_persistent_ips,
    claim_reference,
)
from whereabouts_py.core.codec import reservation_name
from whereabouts_py.core.config import (
    IPAMConfig,
    merge_flat_file,
    parse_cni_args,
    parse_ipam_config,
    requested_addresses,
)
from whereabouts_py.core.poolops import mirror_offset, on_shard, release_offset, sweep
from whereabouts_py.core.shards import (
    Shard,
    is_sharded,
    shard_for_cidr,
    shard_of,
    whole_pool_name,
)
from whereabouts_py.daemon.batching import Coordination, LeaseSettings, PoolWriter
from whereabouts_py.daemon.placement import Placement
from whereabouts_py.errors import (
    AddressNotConfiguredError,
    AddressOutOfRangeError,
    AddressTakenError,
    AlreadyExistsError,
    ConfigError,
    ConflictError,
    ContainerUnknownError,
    DecodeError,
    GarbageCollectionError,
    InvalidEnvironmentError,
    NotAvailableError,
    NotFoundError,
    PoolExhaustedError,
    StoreError,
    TryAgainError,
    WhereaboutsError,
)
from whereabouts_py.metrics import daemon as metrics
from whereabouts_py.store.base import Store
from whereabouts_py.store.flatfile import read_flat_file
from whereabouts_py.store.values import WHOLE_RANGE_ANNOTATION, PoolSnapshot

log = logging.getLogger(__name__)

# How many addresses an ADD skips because another pod holds them through an
# overlapping range before it gives up on the range.
MAX_OVERLAP_SKIPS = 64
# How long a node keeps the Lease of a block it writes after its queue drains.
SHARD_LEASE_LINGER_S = 0.5
# How long the Go project's whole-range object of a sharded range is trusted.
LEGACY_CACHE_S = 1.0
# Distinct configuration warnings remembered (each is logged once per process).
MAX_REMEMBERED_WARNINGS = 1024
# Parsed IPAM sections kept (a node serves a handful of networks).
MAX_PARSED_CONFIGS = 256
# Attempts to write an IPAMClaim's status when it changes under us.
CLAIM_STATUS_ATTEMPTS = 5
# Attempts to delete a reservation that changes under us.
RESERVATION_DROP_ATTEMPTS = 5

NetnsChecker = Callable[[str, str, str], bool]


@dataclass(frozen=True)
class Attachment:
    """Who is asking: one container's interface, and its pod."""

    container_id: str
    ifname: str
    netns: str
    podref: str
    pod_uid: str | None
    cni_args: str

    def owner(self, node: str) -> Allocation:
        return Allocation(self.container_id, self.podref, self.ifname, node, self.pod_uid)


@dataclass(frozen=True)
class _Legacy:
    """The Go project's whole-range object of a range stored as blocks, as last read."""

    exists: bool
    holders: frozenset[int]  # offsets it holds (ours mirrored there included)


@dataclass(frozen=True)
class _Held:
    """One address this call holds (for rollback and the result)."""

    writer: PoolWriter
    shard: Shard
    offset: int  # offset within the whole range
    reservation: str | None
    # The Go project's whole-range object, when this call mirrored its entry there.
    mirror: PoolWriter | None = None

    @property
    def address(self) -> netaddr.IPAddress:
        return self.shard.whole.address_at(self.offset)


# An ADD this recent (or still running) is never GC's to undo: longer than any ADD may
# take (the shim gives up after 30 s) plus the time a runtime may hold its list.
GC_SPARES_ADDS_FOR_S = 300.0


def _attachment(request: Mapping[str, Any], *, need_container: bool = True) -> Attachment:
    container_id = str(request.get("containerID") or "")
    ifname = str(request.get("ifname") or "")
    if need_container and not container_id:
        raise InvalidEnvironmentError("CNI_CONTAINERID is required", "set it to the container ID")
    if need_container and not ifname:
        raise InvalidEnvironmentError("CNI_IFNAME is required", "set it to the interface name")
    cni_args = str(request.get("args") or "")
    args = parse_cni_args(cni_args)
    namespace, name = args.get("K8S_POD_NAMESPACE", ""), args.get("K8S_POD_NAME", "")
    podref = f"{namespace}/{name}" if namespace and name else ""
    return Attachment(
        container_id=container_id,
        ifname=ifname,
        netns=str(request.get("netns") or ""),
        podref=podref,
        pod_uid=args.get("K8S_POD_UID") or None,
        cni_args=cni_args,
    )


class IPAMService:
    """ADD, DEL, CHECK, GC and STATUS for one node."""

    def __init__(
        self,
        store: Store,
        node: str,
        *,
        coordination: Coordination = "auto",
        netns_checker: NetnsChecker | None = None,
        flat_file_reader: Callable[[str | None], dict[str, Any]] = read_flat_file,
    ) -> None:
        self.store = store
        self.node = node
        self.coordination = coordination
        self._netns_checker = netns_checker
        self._read_flat_file = flat_file_reader
        self._writers: dict[str, PoolWriter] = {}
        self._writers_lock = threading.Lock()
        self._attachment_locks = [threading.Lock() for _ in range(64)]
        self._legacy_cache: dict[str, tuple[float, _Legacy]] = {}
        self._warned: set[str] = set()
        self._warned_lock = threading.Lock()
        self._parsed: dict[str, IPAMConfig] = {}  # by the section's canonical JSON
        # When each attachment's latest ADD began on this node: a GC whose list of valid
        # attachments was made before that ADD must not take its address away.
        self._adds_begun: dict[tuple[str, str], float] = {}
        self._adds_lock = threading.Lock()
        self.placement = Placement(store.list_pools, node)

    # --- dispatch ------------------------------------------------------------------------
    def handle(self, request: Mapping[str, Any]) -> dict[str, Any]:
        command = str(request.get("command", ""))
        config = request.get("config")
        if not isinstance(config, dict):
            raise DecodeError("the request carries no network configuration object")
        handlers: dict[str, Callable[[Mapping[str, Any], dict[str, Any]], dict[str, Any]]] = {
            "ADD": self.add,
            "DEL": self.delete,
            "CHECK": self.check,
            "GC": self.gc,
            "STATUS": self.status,
        }
        handler = handlers.get(command)
        if handler is None:
            raise InvalidEnvironmentError(f"CNI_COMMAND={command}: not a verb the daemon serves")
        return handler(request, config)

    def ipam_config(self, config: Mapping[str, Any]) -> IPAMConfig:
        ipam = config.get("ipam")
        if not isinstance(ipam, dict):
            raise ConfigError("ipam", ipam, "must be an object")
        configuration_path = ipam.get("configuration_path")
        flat = self._read_flat_file(
            configuration_path if isinstance(configuration_path, str) else None
        )
        merged = merge_flat_file(ipam, flat) if flat else ipam
        # Every request of a network carries the same section: parsed once.
        key = json.dumps(merged, sort_keys=True, separators=(",", ":"))
        parsed = self._parsed.get(key)
        if parsed is None:
            parsed = parse_ipam_config(merged)
            if len(self._parsed) >= MAX_PARSED_CONFIGS:
                self._parsed.clear()
            self._parsed[key] = parsed
        for warning in parsed.warnings:
            self._warn_once(f"network {config.get('name', '?')}: {warning}")
        return parsed

    def _warn_once(self, message: str) -> None:
        """Log a configuration warning once per process, not on every request.

        Every request of a network carries the same configuration (e.g. the Go
        project's standard flat file with ``"datastore": "kubernetes"``).
        """
        with self._warned_lock:
            if message in self._warned:
                return
            if len(self._warned) < MAX_REMEMBERED_WARNINGS:
                self._warned.add(message)
        log.warning("%s", message)

    def writer(self, config: IPAMConfig, shard: Shard) -> PoolWriter:
        name = shard.name(config.network_name)
        with self._writers_lock:
            writer = self._writers.get(name)
            if writer is None:
                sharded = shard.network != shard.whole.network  # a block of a large range
                writer = PoolWriter(
                    self.store,
                    name,
                    shard.cidr,
                    identity=self.node,
                    lease=LeaseSettings(
                        config.leader_lease_duration / 1000,
                        config.leader_renew_deadline / 1000,
                        config.leader_retry_period / 1000,
                    ),
                    # A node keeps the Lease of the block it writes, so that other
                    # nodes pick other blocks; a one-object range coordinates only
                    # once its writers collide.
                    coordination="always"
                    if sharded and self.coordination != "never"
                    else self.coordination,
                    linger_s=SHARD_LEASE_LINGER_S if sharded else 0.0,
                    metrics_pool=whole_pool_name(shard.whole, config.network_name),
                    annotations={WHOLE_RANGE_ANNOTATION: shard.whole.cidr} if sharded else None,
                    size=shard.window.capacity(),
                    network=config.network_name or "",
                    # The whole-range object of a large range is the Go project's:
                    # we mirror into it while it exists, never create it.
                    create_missing=not is_sharded(shard.whole) or sharded,
                    # Every node writes the one object of a small range: its
                    # writers take turns named in the object (core.turns).
                    turns=not sharded,
                )
                self._writers[name] = writer
            return writer

    def _claim(self, ipam: IPAMConfig) -> Callable[[Shard], bool]:
        def claim(shard: Shard) -> bool:
            if self.coordination == "never":
                return True  # no Leases at all: blocks are chosen lowest first
            try:
                return self.writer(ipam, shard).try_claim()
            except StoreError:
                return True  # Leases unreadable: write optimistically, CAS still decides

        return claim

    @staticmethod
    def _range_key(ipam: IPAMConfig, rng: AddressRange) -> str:
        return whole_pool_name(rng, ipam.network_name)

    # --- ADD -------------------------------------------------------------------------------
    def add(self, request: Mapping[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        attachment = _attachment(request)
        self._note_add_begun(attachment.container_id, attachment.ifname)
        ipam = self.ipam_config(config)
        runtime_config = config.get("runtimeConfig")
        requested = requested_addresses(
            attachment.cni_args, runtime_config if isinstance(runtime_config, dict) else None
        )
        wanted = self._match_requested(ipam, requested)
        owner = attachment.owner(self.node)
        network = ipam.network_name or str(config.get("name", ""))
        held: list[_Held] = []
        try:
            claim = self._claim_of(attachment, config)
            if claim is not None:
                owner = dataclasses.replace(owner, ipam_claim=claim.ref)
                wanted = [
                    want if want is not None else self._claimed_address(ipam, rng, claim)
                    for rng, want in zip(ipam.ranges, wanted, strict=True)
                ]
            for rng, want in zip(ipam.ranges, wanted, strict=True):
                with self._attachment_lock(ipam, rng, owner):
                    held.append(self._reserve(ipam, rng, owner, want))
            if claim is not None:
                self._record_in_claim(claim, held, attachment)
        except BaseException as error:
            self._roll_back(held, owner)
            metrics.ALLOCATIONS.labels(network=network, result=_result_of(error)).inc()
            raise
        metrics.ALLOCATIONS.labels(network=network, result="allocated").inc(len(held))
        ips: list[dict[str, str]] = []
        for item in held:
            address = item.address
            entry = {"address": _cidr_of(item)}
            if ipam.gateway is not None and ipam.gateway.version == address.version:
                entry["gateway"] = str(ipam.gateway)
            ips.append(entry)
        # The static entries of "addresses" follow the allocated ones, as whereabouts does.
        for static in ipam.addresses or ():
            entry = {"address": str(static["address"])}
            if static.get("gateway"):
                entry["gateway"] = str(static["gateway"])
            ips.append(entry)
        result: dict[str, Any] = {"ips": ips}
        if ipam.routes:
            result["routes"] = ipam.routes
        if ipam.dns:
            result["dns"] = ipam.dns
        return result

    # --- persistent addresses (IPAMClaim) -------------------------------------------------
    def _claim_of(self, attachment: Attachment, config: Mapping[str, Any]) -> ClaimState | None:
        """The IPAMClaim this attachment's addresses belong to, or None.

        Only when the network opts in (``allowPersistentIPs``); the claim is
        named in the pod's networks annotation and read from the pod's
        namespace. A network that opts in costs one GET of the pod per ADD.
        """
        if not allows_persistent_ips(config) or not attachment.podref:
            return None
        namespace, _, name = attachment.podref.partition("/")
        pod = self.store.get_pod(namespace, name)
        if pod is None or (attachment.pod_uid and pod.uid and pod.uid != attachment.pod_uid):
            raise TryAgainError(
                f"pod {attachment.podref} (uid {attachment.pod_uid or '?'}) is not readable yet",
                "its networks annotation says which IPAMClaim the address belongs to",
            )
        network_name = str(config.get("name") or "")
        reference = claim_reference(
            {NETWORKS_ANNOTATION: pod.networks} if pod.networks else {},
            attachment.ifname,
            network_name,
        )
        if reference is None:
            return None
        claim = self.store.get_ipam_claim(namespace, reference)
        if claim is None:
            raise ConfigError(
                f"{NETWORKS_ANNOTATION}[{CLAIM_REFERENCE_KEY}]",
                reference,
                f"no IPAMClaim {namespace}/{reference} exists in the pod's namespace",
                "claims are used from the pod's own namespace; KubeVirt creates them",
            )
        if claim.network and network_name and claim.network != network_name:
            raise ConfigError(
                f"IPAMClaim {claim.ref} spec.network",
                claim.network,
                f"the claim is for another network than {network_name!r}",
            )
        return claim

    def _claimed_address(
        self, ipam: IPAMConfig, rng: AddressRange, claim: ClaimState
    ) -> netaddr.IPAddress | None:
        """Where the claim's entry of a range stored as blocks is (one object per range
        otherwise needs no hint: the claim's entry is found in it)."""
        if not is_sharded(rng):
            return None
        for text in claim.ips:
            try:
                address = netaddr.IPAddress(text.split("/", 1)[0])
            except (netaddr.AddrFormatError, ValueError, TypeError):
                continue
            if rng.contains(address):
                return address
        for shard in self._existing_shards(ipam, rng):
            snapshot = self.writer(ipam, shard).read()
            for local, holder in snapshot.allocations.items():
                if holder.ipam_claim == claim.ref:
                    return shard.whole.address_at(shard.to_whole(local))
        return None

    def _record_in_claim(
        self, claim: ClaimState, held: list[_Held], attachment: Attachment
    ) -> None:
        """Write the claim's addresses into its ``status.ips`` unless it lists them already."""
        ips = [_cidr_of(item) for item in held]
        pod_name = attachment.podref.partition("/")[2]
        current: ClaimState | None = claim
        for _ in range(CLAIM_STATUS_ATTEMPTS):
            if current is None:
                raise ConfigError(
                    f"{NETWORKS_ANNOTATION}[{CLAIM_REFERENCE_KEY}]",
                    claim.name,
                    f"IPAMClaim {claim.ref} was deleted during the ADD",
                )
            if list(current.ips) == ips:
                return
            try:
                self.store.write_ipam_claim_status(current, ips, pod_name)
                return
            except ConflictError:
                current = self.store.get_ipam_claim(claim.namespace, claim.name)
            except NotFoundError:
                current = None
        raise TryAgainError(
            f"the status of IPAMClaim {claim.ref} kept changing",
            f"{CLAIM_STATUS_ATTEMPTS} writes of status.ips={ips} conflicted",
        )

    def _attachment_lock(
        self, ipam: IPAMConfig, rng: AddressRange, owner: Allocation
    ) -> threading.Lock:
        """Serialises ADD/DEL of one attachment on one range (e.g. a runtime's retry)."""
        key = (
            self._range_key(ipam, rng),
            owner.ipam_claim or owner.podref or owner.container_id,
            owner.ifname,
        )
        return self._attachment_locks[hash(key) % len(self._attachment_locks)]

    @staticmethod
    def _match_requested(
        ipam: IPAMConfig, requested: list[netaddr.IPAddress]
    ) -> list[netaddr.IPAddress | None]:
        wanted: list[netaddr.IPAddress | None] = []
        used: set[netaddr.IPAddress] = set()
        for rng in ipam.ranges:
            match = next((ip for ip in requested if rng.contains(ip) and ip not in used), None)
            if match is not None:
                used.add(match)
            wanted.append(match)
        for ip in requested:
            if ip not in used:
                ranges = ", ".join(rng.cidr for rng in ipam.ranges)
                raise AddressOutOfRangeError(
                    f"requested address {ip} is in no configured range",
                    f"ranges: {ranges}",
                )
        return wanted

    def _reserve(
        self,
        ipam: IPAMConfig,
        rng: AddressRange,
        owner: Allocation,
        want: netaddr.IPAddress | None,
    ) -> _Held:
        """One address of ``rng`` for ``owner``: its own, the requested one, or a free one."""
        key = self._range_key(ipam, rng)
        legacy = self._legacy_holders(ipam, rng)
        if want is not None:
            candidates: Iterable[Shard] = [shard_of(rng, rng.offset_of(want))]
        else:
            candidates = self.placement.candidates(key, rng, owner, self._claim(ipam))
        for shard in candidates:
            if is_sharded(rng):
                # Before the write: if it lands after a timeout, DEL must look here.
                self.placement.index(key, rng).note(shard.index, owner)
            try:
                held = self._reserve_in(ipam, shard, owner, want, legacy)
            except PoolExhaustedError:
                if is_sharded(rng) and want is None:
                    self.placement.index(key, rng).mark_full(shard.index)
                    continue
                raise
            if is_sharded(rng):
                index = self.placement.index(key, rng)
                index.note(shard.index, owner)
                index.home = shard.index
            return held
        capacity = rng.capacity()
        raise PoolExhaustedError(
            f"no free address in {rng.label}",
            f"all {capacity} assignable addresses are allocated or reserved; "
            "enlarge the range or free addresses of deleted pods",
        )

    def _legacy_holders(self, ipam: IPAMConfig, rng: AddressRange) -> _Legacy:
        """The Go project's whole-range object of a sharded range (absent: empty)."""
        if not is_sharded(rng):
            return _Legacy(False, frozenset())
        name = whole_pool_name(rng, ipam.network_name)
        now = time.monotonic()
        cached = self._legacy_cache.get(name)
        if cached is not None and now - cached[0] < LEGACY_CACHE_S:
            return cached[1]
        snapshot = self.store.get_pool(name, rng.cidr)
        legacy = _Legacy(snapshot.resource_version is not None, frozenset(snapshot.allocations))
        self._legacy_cache[name] = (now, legacy)
        return legacy

    def _reserve_in(
        self,
        ipam: IPAMConfig,
        shard: Shard,
        owner: Allocation,
        want: netaddr.IPAddress | None,
        legacy: _Legacy,
    ) -> _Held:
        writer = self.writer(ipam, shard)
        blocked: set[int] = set(legacy.holders)
        # Side by side with the Go plugin, which sees only its whole-range object:
        # once that object exists, every entry of ours in a block is mirrored
        # there, so that the Go plugin never hands out an address we hold (it
        # ignores our blocks, and its DEL may delete our reservation by name).
        # The whole-range object's compare-and-swap arbitrates between us.
        mirror = (
            self.writer(ipam, Shard(shard.whole, shard.whole.network, 0, shard.whole))
            if legacy.exists and shard.network != shard.whole.network
            else None
        )

        def take(allocations: dict[int, Allocation]) -> tuple[dict[int, Allocation], int]:
            offset, updated = assign(shard.window, allocations, owner, want, blocked.__contains__)
            return updated, offset

        operation = on_shard(shard, take)
        for _ in range(MAX_OVERLAP_SKIPS):
            offset: int = writer.run(operation)
            if mirror is not None:
                whole_name = mirror.name
                try:
                    mirrored = bool(mirror.run(mirror_offset(offset, owner)))
                except NotFoundError:
                    # Deleted since we looked: no Go plugin to hide our address from.
                    self._legacy_cache.pop(whole_name, None)
                    mirror, mirrored = None, True
                except BaseException:
                    self._give_back_after_failure(writer, shard, offset, owner, None)
                    raise
                if not mirrored:
                    # The Go plugin holds it in its object: ours is not to take.
                    writer.run(on_shard(shard, release_offset(offset, owner)))
                    blocked.add(offset)
                    if want is not None:
                        raise AddressTakenError(
                            f"requested address {want} is already allocated to another pod",
                            f"see IPPool {whole_name}",
                        )
                    continue
            if not ipam.enable_overlapping_ranges:
                return _Held(writer, shard, offset, None, mirror)
            name = reservation_name(shard.whole.address_at(offset), ipam.network_name)
            try:
                claimed = self._claim_reservation(name, owner)
            except BaseException:
                self._give_back_after_failure(writer, shard, offset, owner, mirror)
                raise
            if claimed:
                return _Held(writer, shard, offset, name, mirror)
            # Another pod holds this address through an overlapping range: give
            # back our pool entry and try the next address.
            self._unmirror(mirror, offset, owner)
            writer.run(on_shard(shard, release_offset(offset, owner)))
            blocked.add(offset)
            if want is not None:
                raise AddressTakenError(
                    f"requested address {want} is already reserved by another pod",
                    f"see OverlappingRangeIPReservation {name}",
                )
        raise PoolExhaustedError(
            f"no address left in {shard.whole.label} that no overlapping range holds",
            f"{MAX_OVERLAP_SKIPS} candidates were reserved through other ranges",
        )

    def _claim_reservation(self, name: str, owner: Allocation) -> bool:
        """Create or adopt the reservation; False if another pod holds it."""
        for _ in range(5):
            try:
                self.store.create_reservation(name, owner)
                return True
            except AlreadyExistsError:
                existing = self.store.get_reservation(name)
            if existing is None:
                continue  # deleted meanwhile: create again
            holder = existing.holder
            if same_claim(holder, owner):
                # The claim's reservation, recorded by another of its pods: it follows us.
                if holder != owner:
                    try:
                        self.store.update_reservation(existing, owner)
                    except WhereaboutsError:
                        continue
                return True
            if not names_a_pod(owner.podref):
                # No pod identity (plain CNI): only the very same attachment is us.
                return same_container_interface(holder, owner)
            if holder.podref != owner.podref:
                return False
            if not same_pod_interface(holder, owner):
                # The same pod holds it on another interface (another overlapping
                # range): it does not block us, but the reservation stays that
                # interface's, so our DEL never deletes it from under it.
                return True
            if not same_container_interface(holder, owner):
                try:  # a new sandbox of the same pod: the reservation follows it
                    self.store.update_reservation(existing, owner)
                except WhereaboutsError:
                    continue
            return True
        return False

    def _give_back_after_failure(
        self,
        writer: PoolWriter,
        shard: Shard,
        offset: int,
        owner: Allocation,
        mirror: PoolWriter | None,
    ) -> None:
        """The pool entry is written but the ADD fails: give it back, so that "all
        or nothing" holds and no DEL has to find it; a claim's entry stays its own
        (its next pod gets it), as in ``_roll_back``."""
        if owner.ipam_claim:
            return
        with contextlib.suppress(WhereaboutsError):
            self._unmirror(mirror, offset, owner)
            writer.run(on_shard(shard, release_offset(offset, owner)))

    def _roll_back(self, held: list[_Held], owner: Allocation) -> None:
        """Give back what a failed ADD took; a claim's addresses stay its own (its
        next pod gets them)."""
        if owner.ipam_claim:
            return
        for item in reversed(held):
            try:
                if item.reservation is not None:
                    self._drop_reservation(item.reservation, owner)
                self._unmirror(item.mirror, item.offset, owner)
                item.writer.run(on_shard(item.shard, release_offset(item.offset, owner)))
            except WhereaboutsError as error:
                log.error("rollback of %s failed: %s", item.address, error)

    @staticmethod
    def _unmirror(mirror: PoolWriter | None, offset: int, owner: Allocation) -> None:
        if mirror is not None:
            mirror.run(release_offset(offset, owner))

    def _drop_reservation(self, name: str, owner: Allocation) -> None:
        """Delete the reservation if (and only if) it is ``owner``'s, as read just before.

        A conflict means it changed since read (e.g. a newer sandbox of the pod
        took it over): read it again and judge anew.
        """
        for _ in range(RESERVATION_DROP_ATTEMPTS):
            existing = self.store.get_reservation(name)
            if existing is None or not same_sandbox_attachment(existing.holder, owner):
                return
            try:
                self.store.delete_reservation(existing)
                return
            except ConflictError:
                continue
        raise TryAgainError(
            f"OverlappingRangeIPReservation {name} kept changing",
            f"{RESERVATION_DROP_ATTEMPTS} deletes conflicted; retry",
        )

    # --- where an attachment's entries are ---------------------------------------------------
    def _pools_of(self, ipam: IPAMConfig, rng: AddressRange, owner: Allocation) -> list[Shard]:
        """Objects that may hold ``owner``'s entry for ``rng``."""
        if not is_sharded(rng):
            return [shard_of(rng, 0)]
        found = self.placement.located(self._range_key(ipam, rng), rng, owner)
        located = [found] if found is not None else []
        # Entries the Go project wrote live in the whole-range object; where it
        # does not exist (as read within LEGACY_CACHE_S) there is nothing to look
        # for. One made by Go within that second and holding this attachment is
        # left to the reconciler, which frees it once the pod is gone.
        if not self._legacy_holders(ipam, rng).exists:
            return located
        whole = Shard(rng, rng.network, 0, rng)
        return [*located, whole]

    def _existing_shards(self, ipam: IPAMConfig, rng: AddressRange) -> list[Shard]:
        """Every object that exists for ``rng`` (one LIST for a sharded range)."""
        if not is_sharded(rng):
            return [shard_of(rng, 0)]
        found: list[Shard] = []
        for snapshot in self.store.list_pools():
            if snapshot.cidr == rng.cidr and snapshot.name == whole_pool_name(
                rng, ipam.network_name
            ):
                found.append(Shard(rng, rng.network, 0, rng))
                continue
            shard = shard_for_cidr(rng, snapshot.cidr)
            if shard is not None and snapshot.name == shard.name(ipam.network_name):
                found.append(shard)
        return found

    # --- DEL -------------------------------------------------------------------------------
    def delete(self, request: Mapping[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        attachment = _attachment(request)
        ipam = self.ipam_config(config)
        owner = attachment.owner(self.node)
        network = ipam.network_name or str(config.get("name", ""))
        released = 0
        try:
            for rng in ipam.ranges:
                with self._attachment_lock(ipam, rng, owner):
                    freed = sum(
                        len(self._release_in(ipam, shard, owner))
                        for shard in self._pools_of(ipam, rng, owner)
                    )
                    released += freed
                    if freed and is_sharded(rng):
                        # Only when this sandbox's entry went: a late DEL of an old
                        # sandbox must not make us forget where the pod's entry is.
                        self.placement.index(self._range_key(ipam, rng), rng).forget(owner)
        except BaseException as error:
            metrics.RELEASES.labels(network=network, result=_result_of(error)).inc()
            raise
        result = "released" if released else "nothing_held"
        metrics.RELEASES.labels(network=network, result=result).inc()
        return {}

    def _release_in(self, ipam: IPAMConfig, shard: Shard, owner: Allocation) -> list[int]:
        """Free what ``owner``'s container interface holds in one object (reservation first)."""
        writer = self.writer(ipam, shard)
        released: list[int] | None
        if not ipam.enable_overlapping_ranges:
            released = writer.run(_releasing(owner, None))
        else:
            # Its entries are looked up in the writer's copy when that is the
            # latest the watch knows; their reservations go first. An entry the
            # lookup did not see keeps the release from happening, and the lookup
            # is made again from a fresh read.
            seen = self._drop_reservations_of(ipam, shard, owner, writer.current())
            released = writer.run(_releasing(owner, seen))
            if released is None:
                self._drop_reservations_of(ipam, shard, owner, writer.read())
                released = writer.run(_releasing(owner, None))
        assert released is not None  # only a lookup from the copy answers None
        if released and shard.network != shard.whole.network:
            self.placement.index(self._range_key(ipam, shard.whole), shard.whole).mark_has_room(
                shard.index
            )
        return released

    def _drop_reservations_of(
        self, ipam: IPAMConfig, shard: Shard, owner: Allocation, snapshot: PoolSnapshot
    ) -> set[int]:
        """Delete the reservations of ``owner``'s entries in ``snapshot``; their offsets."""
        seen: set[int] = set()
        for local, holder in snapshot.allocations.items():
            if holder.ipam_claim:
                continue  # the claim's, not the pod's: only its deletion frees it
            if same_container_interface(holder, owner):
                address = shard.whole.address_at(shard.to_whole(local))
                self._drop_reservation(reservation_name(address, ipam.network_name), holder)
                seen.add(local)
        return seen

    # --- CHECK -----------------------------------------------------------------------------
    def check(self, request: Mapping[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        attachment = _attachment(request)
        ipam = self.ipam_config(config)
        owner = attachment.owner(self.node)
        for rng in ipam.ranges:
            address: str | None = None
            for shard in self._pools_of(ipam, rng, owner):
                snapshot = self.writer(ipam, shard).read()
                local = next(
                    (
                        key
                        for key, holder in snapshot.allocations.items()
                        if same_container_interface(holder, owner)
                    ),
                    None,
                )
                if local is not None:
                    ip = shard.whole.address_at(shard.to_whole(local))
                    address = f"{ip}/{rng.network.prefixlen}"
                    break
            if address is None:
                raise ContainerUnknownError(
                    f"no address in {rng.cidr} is allocated to container "
                    f"{attachment.container_id} interface {attachment.ifname}",
                    f"no IPPool of {rng.cidr} has such an entry",
                )
            checker = self._netns_checker
            on_interface = (
                checker(attachment.netns, attachment.ifname, address)
                if attachment.netns and checker is not None
                else True
            )
            if not on_interface:
                raise AddressNotConfiguredError(
                    f"{address} is not configured on {attachment.ifname}",
                    f"network namespace {attachment.netns}",
                )
        return {}

    # --- GC ----------------------------------------------------------------------------------
    def gc(self, request: Mapping[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        ipam = self.ipam_config(config)
        valid = _valid_attachments(config)
        failures: list[str] = []
        released_total = 0

        def stale(holder: Allocation) -> bool:
            return (
                not holder.ipam_claim  # a claim's address outlives its pods' containers
                and holder.node == self.node
                and (holder.container_id, holder.ifname) not in valid
                and not self._add_begun_lately(holder.container_id, holder.ifname)
            )

        for rng in ipam.ranges:
            try:
                objects = self._existing_shards(ipam, rng)
            except WhereaboutsError as error:
                failures.append(f"{rng.cidr}: {error}")
                continue
            for shard in objects:
                writer = self.writer(ipam, shard)
                try:
                    snapshot = writer.read()
                except WhereaboutsError as error:
                    failures.append(f"{shard.cidr}: {error}")
                    continue
                doomed = {k: h for k, h in snapshot.allocations.items() if stale(h)}
                if ipam.enable_overlapping_ranges:
                    for local, holder in list(doomed.items()):
                        ip = shard.whole.address_at(shard.to_whole(local))
                        name = reservation_name(ip, ipam.network_name)
                        try:
                            self._drop_reservation(name, holder)
                        except WhereaboutsError as error:
                            # Reservation first, then the entry: the entry stays for
                            # the next GC rather than leave its reservation behind.
                            failures.append(f"{name}: {error}")
                            del doomed[local]
                try:
                    released_total += int(writer.run(sweep(set(doomed.values()))))
                except WhereaboutsError as error:
                    failures.append(f"{shard.cidr}: {error}")
        log.info("GC on %s released %d stale allocations", self.node, released_total)
        metrics.GC_RELEASES.labels(reason="cni_gc").inc(released_total)
        if failures:
            raise GarbageCollectionError(
                f"GC released {released_total} allocations but {len(failures)} steps failed",
                "; ".join(failures),
            )
        return {}

    def _note_add_begun(self, container_id: str, ifname: str) -> None:
        now = time.monotonic()
        horizon = now - GC_SPARES_ADDS_FOR_S
        with self._adds_lock:
            # Kept in the order the ADDs began, so that what no GC can race any
            # more is at the front, forgotten as it ages (no scan of the rest).
            self._adds_begun.pop((container_id, ifname), None)
            self._adds_begun[(container_id, ifname)] = now
            for key, begun in list(itertools.islice(self._adds_begun.items(), 64)):
                if begun > horizon:
                    break
                del self._adds_begun[key]

    def _add_begun_lately(self, container_id: str, ifname: str) -> bool:
        """Whether an ADD of this attachment began here less than GC_SPARES_ADDS_FOR_S ago.

        The runtime lists the valid attachments before it sends GC; an ADD it
        began meanwhile (or that is still running) is missing from that list
        but is no leak: freeing its entry would hand its address out twice.
        """
        with self._adds_lock:
            begun = self._adds_begun.get((container_id, ifname))
        return begun is not None and time.monotonic() - begun < GC_SPARES_ADDS_FOR_S

    # --- STATUS ------------------------------------------------------------------------------
    def status(self, request: Mapping[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        try:
            self.store.ping()
        except StoreError as error:
            raise NotAvailableError("the Kubernetes API is not reachable", str(error)) from None
        ipam = self.ipam_config(config)
        for rng in ipam.ranges:
            try:
                used = 0
                for shard in self._existing_shards(ipam, rng):
                    snapshot = self.writer(ipam, shard).read()
                    used += sum(
                        1
                        for local in snapshot.allocations
                        if rng.is_assignable_offset(shard.to_whole(local))
                    )
            except StoreError as error:
                raise NotAvailableError(
                    f"IPPools of {rng.cidr} cannot be read", str(error)
                ) from None
            if rng.capacity() - used <= 0:
                raise NotAvailableError(
                    f"range {rng.cidr} is exhausted",
                    f"all {rng.capacity()} assignable addresses are allocated",
                )
        return {}


def _cidr_of(item: _Held) -> str:
    """An address as the CNI result and an IPAMClaim's status show it: ``10.1.0.5/24``."""
    return f"{item.address}/{item.shard.whole.network.prefixlen}"


def _result_of(error: BaseException) -> str:
    """A metric label for why an ADD or DEL failed: its CNI error's name, e.g. pool_exhausted."""
    return metrics.result_of(error)


def _valid_attachments(config: Mapping[str, Any]) -> set[tuple[str, str]]:
    if "cni.dev/valid-attachments" not in config:
        # Without the list every attachment would look stale: refuse, free nothing.
        raise ConfigError("cni.dev/valid-attachments", None, "required for GC")
    raw = config["cni.dev/valid-attachments"]
    if not isinstance(raw, list):
        raise ConfigError("cni.dev/valid-attachments", raw, "must be a list")
    valid: set[tuple[str, str]] = set()
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("containerID"), str):
            raise ConfigError(
                f"cni.dev/valid-attachments[{index}]", item, "must be {containerID, ifname}"
            )
        valid.add((item["containerID"], str(item.get("ifname", ""))))
    return valid


def _releasing(
    owner: Allocation, seen: set[int] | None
) -> Callable[[dict[int, Allocation]], tuple[dict[int, Allocation], list[int] | None]]:
    """The pool operation that frees ``owner``'s entries; with ``seen``, only if
    they are all among the offsets whose reservations were dealt with (else it
    changes nothing and answers None: look again)."""

    def drop(allocations: dict[int, Allocation]) -> tuple[dict[int, Allocation], list[int] | None]:
        remaining, released = release(allocations, owner.container_id, owner.ifname)
        if seen is not None and not seen.issuperset(released):
            return allocations, None
        return remaining, released

    return drop
