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
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import netaddr

from whereabouts_py.core.addresses import AddressRange
from whereabouts_py.core.allocator import Allocation, assign, release, release_where
from whereabouts_py.core.codec import pool_name, reservation_name
from whereabouts_py.core.config import (
    IPAMConfig,
    flat_file_candidates,
    merge_flat_file,
    parse_cni_args,
    parse_ipam_config,
    requested_addresses,
)
from whereabouts_py.daemon.batching import Coordination, LeaseSettings, PoolWriter
from whereabouts_py.errors import (
    AddressNotConfiguredError,
    AddressOutOfRangeError,
    AddressTakenError,
    AlreadyExistsError,
    ConfigError,
    ContainerUnknownError,
    DecodeError,
    GarbageCollectionError,
    InvalidEnvironmentError,
    NotAvailableError,
    PoolExhaustedError,
    StoreError,
    WhereaboutsError,
)
from whereabouts_py.store.kube import KubeStore, Reservation

log = logging.getLogger(__name__)

# How many addresses an ADD skips because another pod holds them through an
# overlapping range before it gives up on the range.
MAX_OVERLAP_SKIPS = 64

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
class _Held:
    """One address this call holds (for rollback)."""

    writer: PoolWriter
    rng: AddressRange
    offset: int
    reservation: str | None


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


def read_flat_file(configuration_path: str | None) -> dict[str, Any]:
    """The first existing whereabouts.conf of the lookup order, or {}."""
    for candidate in flat_file_candidates(configuration_path):
        path = Path(candidate)
        if not path.is_file():
            continue
        try:
            content = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError("configuration_path", candidate, f"unreadable: {error}") from None
        if not isinstance(content, dict):
            raise ConfigError("configuration_path", candidate, "must hold a JSON object")
        return content
    return {}


class IPAMService:
    """ADD, DEL, CHECK, GC and STATUS for one node."""

    def __init__(
        self,
        store: KubeStore,
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
        self.conflicts = 0

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
        parsed = parse_ipam_config(merge_flat_file(ipam, flat) if flat else ipam)
        for warning in parsed.warnings:
            log.warning("network %s: %s", config.get("name", "?"), warning)
        return parsed

    def writer(self, config: IPAMConfig, rng: AddressRange) -> PoolWriter:
        name = pool_name(rng.cidr, config.network_name)
        with self._writers_lock:
            writer = self._writers.get(name)
            if writer is None:
                writer = PoolWriter(
                    self.store,
                    name,
                    rng.cidr,
                    identity=self.node,
                    lease=LeaseSettings(
                        config.leader_lease_duration / 1000,
                        config.leader_renew_deadline / 1000,
                        config.leader_retry_period / 1000,
                    ),
                    coordination=self.coordination,
                    on_conflict=self._count_conflict,
                )
                self._writers[name] = writer
            return writer

    def _count_conflict(self, _pool: str) -> None:
        self.conflicts += 1

    # --- ADD -------------------------------------------------------------------------------
    def add(self, request: Mapping[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        attachment = _attachment(request)
        ipam = self.ipam_config(config)
        runtime_config = config.get("runtimeConfig")
        requested = requested_addresses(
            attachment.cni_args, runtime_config if isinstance(runtime_config, dict) else None
        )
        wanted = self._match_requested(ipam, requested)
        owner = attachment.owner(self.node)
        held: list[_Held] = []
        try:
            for rng, want in zip(ipam.ranges, wanted, strict=True):
                held.append(self._reserve(ipam, rng, owner, want))
        except BaseException:
            self._roll_back(held, owner)
            raise
        ips: list[dict[str, str]] = []
        for item in held:
            address = item.rng.address_at(item.offset)
            entry = {"address": f"{address}/{item.rng.network.prefixlen}"}
            if ipam.gateway is not None and ipam.gateway.version == address.version:
                entry["gateway"] = str(ipam.gateway)
            ips.append(entry)
        result: dict[str, Any] = {"ips": ips}
        if ipam.routes:
            result["routes"] = ipam.routes
        if ipam.dns:
            result["dns"] = ipam.dns
        return result

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
        writer = self.writer(ipam, rng)
        blocked: set[int] = set()

        def take(allocations: dict[int, Allocation]) -> tuple[dict[int, Allocation], int]:
            offset, updated = assign(rng, allocations, owner, want, blocked.__contains__)
            return updated, offset

        for _ in range(MAX_OVERLAP_SKIPS):
            offset: int = writer.run(take)
            if not ipam.enable_overlapping_ranges:
                return _Held(writer, rng, offset, None)
            name = reservation_name(rng.address_at(offset), ipam.network_name)
            if self._claim_reservation(name, owner):
                return _Held(writer, rng, offset, name)
            # Another pod holds this address through an overlapping range: give
            # back our pool entry and try the next address.
            writer.run(_release_offset(offset, owner))
            blocked.add(offset)
            if want is not None:
                raise AddressTakenError(
                    f"requested address {want} is already reserved by another pod",
                    f"see OverlappingRangeIPReservation {name}",
                )
        raise PoolExhaustedError(
            f"no address left in {rng.cidr} that no overlapping range holds",
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
            if holder.podref != owner.podref or not owner.podref:
                return False
            if holder.container_id != owner.container_id or holder.ifname != owner.ifname:
                try:
                    self.store.update_reservation(existing, owner)
                except StoreError:
                    continue
            return True
        return False

    def _roll_back(self, held: list[_Held], owner: Allocation) -> None:
        for item in reversed(held):
            try:
                if item.reservation is not None:
                    self._drop_reservation(item.reservation, owner)
                item.writer.run(_release_offset(item.offset, owner))
            except WhereaboutsError as error:
                log.error("rollback of %s offset %d failed: %s", item.rng.cidr, item.offset, error)

    def _drop_reservation(self, name: str, owner: Allocation) -> None:
        existing = self.store.get_reservation(name)
        if existing is not None and _same_holder(existing, owner):
            self.store.delete_reservation(existing)

    # --- DEL -------------------------------------------------------------------------------
    def delete(self, request: Mapping[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        attachment = _attachment(request)
        ipam = self.ipam_config(config)
        owner = attachment.owner(self.node)
        for rng in ipam.ranges:
            writer = self.writer(ipam, rng)
            if ipam.enable_overlapping_ranges:
                snapshot = writer.read()
                for offset, holder in snapshot.allocations.items():
                    if holder.container_id == owner.container_id and holder.ifname == owner.ifname:
                        name = reservation_name(rng.address_at(offset), ipam.network_name)
                        self._drop_reservation(name, owner)

            def drop(allocations: dict[int, Allocation]) -> tuple[dict[int, Allocation], None]:
                remaining, _released = release(allocations, owner.container_id, owner.ifname)
                return remaining, None

            writer.run(drop)
        return {}

    # --- CHECK -----------------------------------------------------------------------------
    def check(self, request: Mapping[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        attachment = _attachment(request)
        ipam = self.ipam_config(config)
        for rng in ipam.ranges:
            snapshot = self.writer(ipam, rng).read()
            offset = next(
                (
                    offset
                    for offset, holder in snapshot.allocations.items()
                    if holder.container_id == attachment.container_id
                    and holder.ifname == attachment.ifname
                ),
                None,
            )
            if offset is None:
                raise ContainerUnknownError(
                    f"no address in {rng.cidr} is allocated to container "
                    f"{attachment.container_id} interface {attachment.ifname}",
                    f"IPPool {snapshot.name} has no such entry",
                )
            address = f"{rng.address_at(offset)}/{rng.network.prefixlen}"
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
            return holder.node == self.node and (holder.container_id, holder.ifname) not in valid

        for rng in ipam.ranges:
            writer = self.writer(ipam, rng)
            try:
                snapshot = writer.read()
            except WhereaboutsError as error:
                failures.append(f"{rng.cidr}: {error}")
                continue
            doomed = {o: h for o, h in snapshot.allocations.items() if stale(h)}
            if ipam.enable_overlapping_ranges:
                for offset, holder in doomed.items():
                    name = reservation_name(rng.address_at(offset), ipam.network_name)
                    try:
                        self._drop_reservation(name, holder)
                    except WhereaboutsError as error:
                        failures.append(f"{name}: {error}")

            try:
                released_total += int(writer.run(_sweep(set(doomed.values()))))
            except WhereaboutsError as error:
                failures.append(f"{rng.cidr}: {error}")
        log.info("GC on %s released %d stale allocations", self.node, released_total)
        if failures:
            raise GarbageCollectionError(
                f"GC released {released_total} allocations but {len(failures)} steps failed",
                "; ".join(failures),
            )
        return {}

    # --- STATUS ------------------------------------------------------------------------------
    def status(self, request: Mapping[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        try:
            self.store.ping()
        except StoreError as error:
            raise NotAvailableError("the Kubernetes API is not reachable", str(error)) from None
        ipam = self.ipam_config(config)
        for rng in ipam.ranges:
            try:
                snapshot = self.writer(ipam, rng).read()
            except StoreError as error:
                raise NotAvailableError(
                    f"IPPool for {rng.cidr} cannot be read", str(error)
                ) from None
            used = sum(1 for offset in snapshot.allocations if rng.is_assignable_offset(offset))
            if rng.capacity() - used <= 0:
                raise NotAvailableError(
                    f"range {rng.cidr} is exhausted",
                    f"all {rng.capacity()} assignable addresses are allocated",
                )
        return {}


def _same_holder(reservation: Reservation, owner: Allocation) -> bool:
    holder = reservation.holder
    return holder.container_id == owner.container_id and holder.ifname == owner.ifname


def _release_offset(
    offset: int, owner: Allocation
) -> Callable[[dict[int, Allocation]], tuple[dict[int, Allocation], None]]:
    """An operation that frees ``offset`` if (and only if) ``owner`` still holds it."""

    def operation(allocations: dict[int, Allocation]) -> tuple[dict[int, Allocation], None]:
        holder = allocations.get(offset)
        if holder is not None and (holder.container_id, holder.ifname) == (
            owner.container_id,
            owner.ifname,
        ):
            remaining = dict(allocations)
            del remaining[offset]
            return remaining, None
        return allocations, None

    return operation


def _sweep(
    doomed: set[Allocation],
) -> Callable[[dict[int, Allocation]], tuple[dict[int, Allocation], int]]:
    """An operation that frees the entries judged stale (if they are unchanged)."""

    def operation(allocations: dict[int, Allocation]) -> tuple[dict[int, Allocation], int]:
        remaining, released = release_where(allocations, doomed.__contains__)
        return remaining, len(released)

    return operation


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
