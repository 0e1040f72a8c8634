"""Address ranges: which addresses of a configured range may be handed out.

An ``AddressRange`` is the pure description of one allocatable range: its
canonical network, the first and last assignable addresses (narrowed by
``range_start``/``range_end``), the excluded intervals and the gateway. It
answers the questions the allocator asks — is this address assignable, how
many are, which is the lowest free one — by arithmetic on integers, so an
IPv6 /64 costs no more than an IPv4 /24.

Addresses are identified by their *offset* from the network address, the key
the IPPool custom resource uses for its allocations.

Semantics (see DESIGN.md, "Allocation semantics"): the network address and
the last address of the network (the IPv4 broadcast, the IPv6 all-ones) are
never assignable, so a /31, /32, /127 or /128 has no assignable address at
all; excluded addresses and the gateway are never assignable either.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field

import netaddr

from whereabouts_py.errors import ConfigError

# Inclusive (low, high) pair of integers.
Interval = tuple[int, int]

_MAX_PREFIX = {4: 32, 6: 128}


def parse_address(text: str, key: str) -> netaddr.IPAddress:
    """An IPv4 or IPv6 address in standard notation; ConfigError naming ``key`` otherwise."""
    if not isinstance(text, str):
        raise ConfigError(key, text, "must be a string holding an IP address")
    try:
        return netaddr.IPAddress(text.strip(), flags=netaddr.INET_PTON)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise ConfigError(key, text, "not an IP address") from None


def parse_network(text: str, key: str) -> netaddr.IPNetwork:
    """A CIDR ``address/prefix``, canonicalised (host bits cleared)."""
    if not isinstance(text, str):
        raise ConfigError(key, text, "must be a string holding a CIDR")
    address_text, slash, prefix_text = text.strip().partition("/")
    if not slash:
        raise ConfigError(key, text, "not a CIDR (expected address/prefix)")
    try:
        address = netaddr.IPAddress(address_text, flags=netaddr.INET_PTON)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise ConfigError(key, text, "not a CIDR: the address part is invalid") from None
    max_prefix = _MAX_PREFIX[address.version]
    if not (prefix_text.isascii() and prefix_text.isdigit()) or int(prefix_text) > max_prefix:
        raise ConfigError(
            key, text, f"not a CIDR: the prefix must be a number from 0 to {max_prefix}"
        )
    return netaddr.IPNetwork(f"{address}/{int(prefix_text)}").cidr


def _merge(intervals: Sequence[Interval]) -> tuple[Interval, ...]:
    """Sort intervals and fuse those that overlap or touch."""
    merged: list[Interval] = []
    for low, high in sorted(intervals):
        if merged and low <= merged[-1][1] + 1:
            if high > merged[-1][1]:
                merged[-1] = (merged[-1][0], high)
        else:
            merged.append((low, high))
    return tuple(merged)


@dataclass(frozen=True)
class AddressRange:
    """One allocatable range.

    ``first``/``last`` are the lowest/highest assignable addresses as
    integers; ``first > last`` means the range has no assignable address.
    ``excluded`` holds the merged excluded intervals (integers, inclusive,
    clipped to the network). ``gateway`` is never handed out when it lies
    between ``first`` and ``last``.
    """

    network: netaddr.IPNetwork
    first: int
    last: int
    excluded: tuple[Interval, ...] = ()
    gateway: netaddr.IPAddress | None = None
    # Derived in __post_init__: offsets the walk must jump over (excludes and
    # the gateway, clipped to [first, last]), their starts for bisection, and
    # the number of assignable addresses.
    _skips: tuple[Interval, ...] = field(init=False, repr=False, compare=False)
    _skip_starts: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _excluded_starts: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _capacity: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "excluded", _merge(self.excluded))
        base = self.network.first
        low, high = self.first - base, self.last - base
        blocked = [(start - base, end - base) for start, end in self.excluded]
        if self.gateway is not None and self.gateway.version == self.version:
            gateway_offset = int(self.gateway) - base
            blocked.append((gateway_offset, gateway_offset))
        skips = tuple(
            (max(start, low), min(end, high))
            for start, end in _merge(blocked)
            if end >= low and start <= high
        )
        span = high - low + 1 if high >= low else 0
        capacity = span - sum(end - start + 1 for start, end in skips) if span else 0
        object.__setattr__(self, "_skips", skips)
        object.__setattr__(self, "_skip_starts", tuple(start for start, _ in skips))
        object.__setattr__(self, "_excluded_starts", tuple(start for start, _ in self.excluded))
        object.__setattr__(self, "_capacity", capacity)

    @property
    def version(self) -> int:
        return int(self.network.version)

    @property
    def cidr(self) -> str:
        """The canonical CIDR, as stored in ``IPPool.spec.range``."""
        return str(self.network)

    @property
    def first_offset(self) -> int:
        return self.first - int(self.network.first)

    @property
    def last_offset(self) -> int:
        return self.last - int(self.network.first)

    @property
    def label(self) -> str:
        """How error messages name this range: the CIDR, plus bounds when narrowed."""
        usable_low, usable_high = _usable_bounds(self.network)
        if self.first > self.last or (self.first, self.last) == (usable_low, usable_high):
            return self.cidr
        first = netaddr.IPAddress(self.first, self.version)
        last = netaddr.IPAddress(self.last, self.version)
        return f"{first}-{last} of {self.cidr}"

    def contains(self, ip: netaddr.IPAddress) -> bool:
        """Whether ``ip`` lies in the network (assignable or not)."""
        return bool(ip.version == self.version and ip in self.network)

    def offset_of(self, ip: netaddr.IPAddress) -> int:
        """Offset of ``ip`` from the network address (the IPPool allocation key)."""
        if not self.contains(ip):
            raise ValueError(f"{ip} is not in {self.cidr}")
        return int(ip) - int(self.network.first)

    def address_at(self, offset: int) -> netaddr.IPAddress:
        """The address ``offset`` places after the network address."""
        if not 0 <= offset < self.network.size:
            raise ValueError(f"offset {offset} is outside {self.cidr}")
        return netaddr.IPAddress(int(self.network.first) + offset, self.version)

    def is_assignable_offset(self, offset: int) -> bool:
        if not self.first_offset <= offset <= self.last_offset:
            return False
        index = bisect_right(self._skip_starts, offset) - 1
        return index < 0 or self._skips[index][1] < offset

    def is_assignable(self, ip: netaddr.IPAddress) -> bool:
        """Whether ``ip`` may ever be handed out from this range."""
        return self.contains(ip) and self.is_assignable_offset(self.offset_of(ip))

    def why_not_assignable(self, ip: netaddr.IPAddress) -> str | None:
        """A short reason ``ip`` is not assignable, or None when it is."""
        if not self.contains(ip):
            return f"not in {self.cidr}"
        if self.is_assignable(ip):
            return None
        value = int(ip)
        if value == self.network.first:
            return "is the network address"
        if value == self.network.last:
            return "is the last address of the network"
        if self.gateway is not None and ip == self.gateway:
            return "is the gateway"
        if not self.first <= value <= self.last:
            return f"is outside range_start/range_end of {self.label}"
        return "is excluded"

    def capacity(self) -> int:
        """Number of assignable addresses (held ones included)."""
        return self._capacity

    def stretches(self, start: int | None = None) -> Iterator[Interval]:
        """Runs of assignable offsets (inclusive pairs), ascending, lazily.

        The runs are the gaps between the excluded intervals (and the gateway)
        inside [first, last]; finding the first one at or after ``start`` is a
        bisection, and each further one costs one step, so the work depends on
        the number of exclusions, never on the size of the address space.
        """
        candidate = self.first_offset if start is None else max(start, self.first_offset)
        high = self.last_offset
        skips = self._skips
        index = max(bisect_right(self._skip_starts, candidate) - 1, 0)
        while candidate <= high:
            while index < len(skips) and skips[index][1] < candidate:
                index += 1
            if index < len(skips) and skips[index][0] <= candidate:
                candidate = skips[index][1] + 1
                continue
            stretch_end = skips[index][0] - 1 if index < len(skips) else high
            yield candidate, stretch_end
            candidate = stretch_end + 1

    def clipped(self, low: int, high: int) -> AddressRange:
        """This range narrowed to the addresses ``low``..``high`` (integers).

        Only the exclusions that meet the window are kept, so a window costs
        a bisection, not a pass over every exclusion.
        """
        first, last = max(self.first, low), min(self.last, high)
        starts = self._excluded_starts
        begin = max(bisect_right(starts, low) - 1, 0)
        end = bisect_right(starts, high)
        excluded = tuple((start, stop) for start, stop in self.excluded[begin:end] if stop >= low)
        return AddressRange(self.network, first, last, excluded, self.gateway)

    def iter_free(self, held: Container[int], start: int | None = None) -> Iterator[int]:
        """Offsets of assignable addresses not in ``held``, ascending, lazily.

        Excluded stretches are jumped over, never walked, so a huge exclude in
        an IPv6 /64 costs nothing; each assignable address is tested once
        against ``held`` (a set or a mapping keyed by offset).
        """
        for low, high in self.stretches(start):
            for offset in range(low, high + 1):
                if offset not in held:
                    yield offset

    def lowest_free(
        self,
        held: Container[int],
        blocked: Callable[[int], bool] | None = None,
    ) -> int | None:
        """The lowest assignable offset neither held nor vetoed by ``blocked``."""
        for offset in self.iter_free(held):
            if blocked is None or not blocked(offset):
                return offset
        return None


def _usable_bounds(network: netaddr.IPNetwork) -> Interval:
    """Network address + 1 .. last address - 1 (empty for /31, /32, /127, /128)."""
    return int(network.first) + 1, int(network.last) - 1


def _parse_exclude(text: str, key: str, network: netaddr.IPNetwork) -> Interval:
    if isinstance(text, str) and "/" in text:
        excluded = parse_network(text, key)
    else:
        try:
            address = parse_address(text, key)
        except ConfigError:
            raise ConfigError(key, text, "not a CIDR or an IP address") from None
        excluded = netaddr.IPNetwork(f"{address}/{_MAX_PREFIX[address.version]}")
    if excluded.version != network.version:
        raise ConfigError(
            key, text, f"is IPv{excluded.version} but the range {network} is IPv{network.version}"
        )
    return int(excluded.first), int(excluded.last)


def _parse_bound(
    text: str | None, key: str, network: netaddr.IPNetwork, warnings: list[str]
) -> int | None:
    """A range_start/range_end as an integer, or None when unset or ignored.

    Unparsable or misplaced bounds are ignored with a warning rather than
    rejected: the Go project ignores them too, and existing NADs rely on it.
    """
    if text is None or text == "":
        return None
    try:
        address = parse_address(text, key)
    except ConfigError:
        if not isinstance(text, str):
            raise
        warnings.append(f"{key}={text}: not an IP address; ignored")
        return None
    if address.version != network.version or address not in network:
        warnings.append(f"{key}={text}: outside {network}; ignored")
        return None
    return int(address)


def parse_range(
    spec: str,
    *,
    range_start: str | None = None,
    range_end: str | None = None,
    exclude: Sequence[str] = (),
    gateway: netaddr.IPAddress | None = None,
    key_prefix: str = "",
) -> tuple[AddressRange, list[str]]:
    """Build an AddressRange from its configuration; return it with warnings.

    ``spec`` is a CIDR (``192.168.2.0/24``) or ``first-last/prefix``
    (``192.168.2.10-192.168.2.20/24``), the latter setting the bounds itself.
    ``key_prefix`` (e.g. ``"ipRanges[1]."``) makes ConfigError keys and
    warnings name the exact place in the configuration.
    """
    range_key = f"{key_prefix}range"
    start_key, end_key = f"{key_prefix}range_start", f"{key_prefix}range_end"
    warnings: list[str] = []
    if not isinstance(spec, str):
        raise ConfigError(range_key, spec, "must be a string holding a CIDR")
    first_text, dash, cidr_text = spec.strip().partition("-")
    if dash:
        try:
            first_ip = parse_address(first_text, range_key)
            network = parse_network(cidr_text, range_key)
        except ConfigError:
            # Name the whole value, not the half that failed.
            raise ConfigError(
                range_key,
                spec,
                "expected a CIDR like 192.168.2.0/24 "
                "or first-last/prefix like 192.168.2.10-192.168.2.20/24",
            ) from None
        last_address = cidr_text.partition("/")[0]
        if first_ip.version != network.version or first_ip not in network:
            raise ConfigError(
                range_key, spec, f"the first address {first_ip} lies outside {network}"
            )
        for key, value in ((start_key, range_start), (end_key, range_end)):
            if value not in (None, ""):
                warnings.append(f"{key}={value}: ignored, {range_key} sets the bounds itself")
        range_start, range_end = str(first_ip), last_address.strip()
        start_key, end_key = f"{range_key} (first address)", f"{range_key} (last address)"
    else:
        network = parse_network(spec, range_key)

    usable_low, usable_high = _usable_bounds(network)
    first, last = usable_low, usable_high
    start = _parse_bound(range_start, start_key, network, warnings)
    end = _parse_bound(range_end, end_key, network, warnings)
    # The network address as range_start is the Go project's own default, and
    # the last address as range_end means "to the end": neither is worth a warning.
    if start is not None and start != network.first:
        if usable_low <= start <= usable_high:
            first = start
        else:
            warnings.append(
                f"{start_key}={range_start}: not an assignable address of {network}; ignored"
            )
    if end is not None and end != network.last:
        if not usable_low <= end <= usable_high:
            warnings.append(
                f"{end_key}={range_end}: not an assignable address of {network}; ignored"
            )
        elif end < first:
            warnings.append(
                f"{end_key}={range_end}: lies before the range start "
                f"{netaddr.IPAddress(first, network.version)}; "
                "the end is ignored"
            )
        else:
            last = end

    if not isinstance(exclude, Sequence) or isinstance(exclude, str):
        raise ConfigError(f"{key_prefix}exclude", exclude, "must be a list of CIDRs or IPs")
    intervals: list[Interval] = []
    for index, text in enumerate(exclude):
        key = f"{key_prefix}exclude[{index}]"
        low, high = _parse_exclude(text, key, network)
        if high < network.first or low > network.last:
            warnings.append(f"{key}={text}: does not overlap {network}; it excludes nothing")
            continue
        intervals.append((max(low, int(network.first)), min(high, int(network.last))))

    if gateway is not None and gateway.version != network.version:
        gateway = None
    address_range = AddressRange(
        network=network, first=first, last=last, excluded=_merge(intervals), gateway=gateway
    )
    if address_range.capacity() == 0:
        warnings.append(f"{range_key}={spec}: has no assignable address; every ADD will fail")
    return address_range, warnings
