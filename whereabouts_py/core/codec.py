"""The byte-compatible mapping between allocations and the whereabouts CRDs.

Group ``whereabouts.cni.cncf.io``, version ``v1alpha1``, as written by the Go
project (v0.9.x), so that both implementations can share the same objects:

- ``IPPool`` ``spec``: ``{"range": "<cidr>", "allocations": {"<decimal
  offset>": {"id": <containerID>, "podref": "ns/name", "ifname": "net1"}}}``.
- ``OverlappingRangeIPReservation`` ``spec``: ``{"podref", "ifname",
  "containerid"}``.

We add two optional fields, ``node`` and ``poduid``, only when known; the Go
project ignores them. Decoding accepts what the Go project writes, including
objects from versions that had no ``ifname``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

import netaddr

from whereabouts_py.core.allocator import Allocation
from whereabouts_py.errors import StoreError

GROUP = "whereabouts.cni.cncf.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


class AllocationEntry(TypedDict):
    """One value of ``IPPool.spec.allocations``."""

    id: str
    podref: str
    ifname: str
    ipamclaimref: NotRequired[str]
    node: NotRequired[str]
    poduid: NotRequired[str]


class IPPoolSpec(TypedDict):
    range: str
    allocations: dict[str, AllocationEntry]


class ReservationSpec(TypedDict):
    """``OverlappingRangeIPReservation.spec``."""

    containerid: str
    podref: str
    ifname: str
    ipamclaimref: NotRequired[str]
    node: NotRequired[str]
    poduid: NotRequired[str]


def normalize_name(text: str) -> str:
    """A range or address made into an object name, exactly as the Go project does.

    A trailing ``:`` first gets a ``0`` (a name may not end in ``-``), then
    every ``:`` and ``/`` becomes ``-``.
    """
    if text.endswith(":"):
        text += "0"
    return text.replace(":", "-").replace("/", "-")


def _prefixed(name: str, network_name: str | None) -> str:
    return f"{network_name}-{name}" if network_name else name


def pool_name(cidr: str | netaddr.IPNetwork, network_name: str | None = None) -> str:
    """Name of the IPPool of ``cidr``: ``192.168.2.0/24`` -> ``192.168.2.0-24``."""
    canonical = netaddr.IPNetwork(cidr).cidr
    return _prefixed(normalize_name(str(canonical)), network_name)


def reservation_name(ip: str | netaddr.IPAddress, network_name: str | None = None) -> str:
    """Name of the OverlappingRangeIPReservation of ``ip``: ``2001::`` -> ``2001--0``."""
    return _prefixed(normalize_name(str(netaddr.IPAddress(ip))), network_name)


def _text_field(entry: Mapping[str, Any], field: str, where: str) -> str:
    """A string field; missing or null reads as "" like Go's decoder does."""
    value = entry.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise StoreError(f"malformed {where}", f"field {field!r} is {value!r}, not a string")
    return value


def _optional_field(entry: Mapping[str, Any], field: str, where: str) -> str | None:
    return _text_field(entry, field, where) or None


def _decode_owner(entry: Any, container_field: str, where: str) -> Allocation:
    if not isinstance(entry, Mapping):
        raise StoreError(f"malformed {where}", f"expected an object, got {entry!r}")
    return Allocation(
        container_id=_text_field(entry, container_field, where),
        podref=_text_field(entry, "podref", where),
        ifname=_text_field(entry, "ifname", where),
        node=_optional_field(entry, "node", where),
        pod_uid=_optional_field(entry, "poduid", where),
        ipam_claim=_optional_field(entry, "ipamclaimref", where),
    )


class DecodedEntries:
    """One pool's entries as last decoded: key -> (raw entry, its Allocation).

    A shared pool is read again after every other node's write, and decoding
    its entries (up to 256 objects) costs more CPU than the request itself;
    with this, a read decodes only the entries that changed since the last one.
    Entries are immutable and the mapping is replaced, never changed in place,
    so threads may share one (a race only loses some reuse).
    """

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: dict[str, tuple[object, Allocation]] = {}


def decode_allocations(
    spec: Mapping[str, Any], pool: str = "", known: DecodedEntries | None = None
) -> dict[int, Allocation]:
    """The allocations of an IPPool ``spec``, keyed by offset.

    ``pool`` (the object's name) only makes error messages precise. A key
    that is not a non-negative decimal integer is a StoreError: the pool is
    corrupt and guessing could hand out a held address. With ``known``, an
    entry equal to the one decoded last time under its key is not decoded
    again, and ``known`` is updated to this read.
    """
    raw = spec.get("allocations")
    if raw is None:
        if known is not None:
            known.entries = {}
        return {}
    if not isinstance(raw, Mapping):
        where_pool = f"IPPool {pool}" if pool else "IPPool"
        raise StoreError(f"malformed {where_pool}", f"spec.allocations is {raw!r}, not an object")
    previous = known.entries if known is not None else {}
    seen: dict[str, tuple[object, Allocation]] = {}
    allocations: dict[int, Allocation] = {}
    for key, entry in raw.items():
        if not (isinstance(key, str) and key.isascii() and key.isdigit()):
            raise StoreError(
                f"malformed {_where(pool, key)}",
                "allocation keys must be non-negative decimal offsets",
            )
        offset = int(key)
        if offset in allocations:
            raise StoreError(f"malformed {_where(pool, key)}", f"offset {offset} appears twice")
        hit = previous.get(key)
        if hit is not None and hit[0] == entry:
            allocation = hit[1]
        else:
            allocation = _decode_owner(entry, "id", _where(pool, key))
        allocations[offset] = allocation
        seen[key] = (entry, allocation)
    if known is not None:
        known.entries = seen
    return allocations


def _where(pool: str, key: object) -> str:
    return f"IPPool {pool} allocation {key!r}" if pool else f"IPPool allocation {key!r}"


def encode_allocation(allocation: Allocation) -> AllocationEntry:
    entry = AllocationEntry(
        id=allocation.container_id, podref=allocation.podref, ifname=allocation.ifname
    )
    if allocation.ipam_claim:
        entry["ipamclaimref"] = allocation.ipam_claim
    if allocation.node:
        entry["node"] = allocation.node
    if allocation.pod_uid:
        entry["poduid"] = allocation.pod_uid
    return entry


def encode_allocations(allocations: Mapping[int, Allocation]) -> dict[str, AllocationEntry]:
    """``spec.allocations`` for an IPPool, in ascending offset order."""
    return {str(offset): encode_allocation(allocations[offset]) for offset in sorted(allocations)}


def encode_pool_spec(cidr: str, allocations: Mapping[int, Allocation]) -> IPPoolSpec:
    return IPPoolSpec(range=cidr, allocations=encode_allocations(allocations))


def encode_reservation(allocation: Allocation) -> ReservationSpec:
    """``spec`` of an OverlappingRangeIPReservation held by ``allocation``."""
    spec = ReservationSpec(
        containerid=allocation.container_id,
        podref=allocation.podref,
        ifname=allocation.ifname,
    )
    if allocation.ipam_claim:
        spec["ipamclaimref"] = allocation.ipam_claim
    if allocation.node:
        spec["node"] = allocation.node
    if allocation.pod_uid:
        spec["poduid"] = allocation.pod_uid
    return spec


def decode_reservation(spec: Mapping[str, Any], name: str = "") -> Allocation:
    """The holder recorded in an OverlappingRangeIPReservation ``spec``."""
    where = f"OverlappingRangeIPReservation {name}" if name else "OverlappingRangeIPReservation"
    return _decode_owner(spec, "containerid", where)
