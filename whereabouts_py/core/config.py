"""The ``ipam`` section of a CNI network configuration, parsed and validated.

Accepts every key whereabouts v0.9.x accepts (DESIGN.md, "Compatibility
facts"), so an existing NetworkAttachmentDefinition keeps working unchanged.
Problems that would break an ADD are ConfigErrors naming the key path and the
offending value; everything the Go project tolerates (unknown keys, keys of
the removed etcd backend, misplaced ``range_start``/``range_end``) becomes a
warning collected in ``IPAMConfig.warnings``: this module never logs.

Every key is checked before anything is allocated, the ones only passed
through to the CNI result (``routes``, ``dns``, ``addresses``) included, and
so is every object name derived from the configuration (the IPPool and
OverlappingRangeIPReservation names, which embed ``network_name``): a name
Kubernetes would refuse is a ConfigError naming the key, never a request.

Addresses are read as the Go project reads them: the top-level ``range``,
``range_start``, ``range_end``, ``exclude``, ``gateway``, every ``ipRanges``
entry's ``range`` and ``exclude`` and every ``addresses`` entry accept IPv4
octets with leading zeroes (``00192.00168.1.0/24`` is ``192.168.1.0/24``,
Kubernetes' "sloppy" parsing); an ``ipRanges`` entry's ``range_start`` and
``range_end`` are decoded strictly, and one that does not parse is a
configuration error (the top-level ones are ignored with a warning instead).

Also here, because they are parsing too: merging the flat file
(``whereabouts.conf``) into the NAD's values, the flat file lookup order,
CNI_ARGS, and the addresses a pod requests.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import netaddr

from whereabouts_py.cni.limits import MAX_DEPTH, nesting_depth
from whereabouts_py.cni.names import SUBDOMAIN_RULE, is_object_name
from whereabouts_py.core.addresses import AddressRange, parse_address, parse_network, parse_range
from whereabouts_py.core.codec import pool_name, reservation_name
from whereabouts_py.errors import ConfigError, InvalidEnvironmentError

LOG_LEVELS = ("debug", "verbose", "error", "panic")

DEFAULT_LEADER_LEASE_DURATION_MS = 1500
DEFAULT_LEADER_RENEW_DEADLINE_MS = 1000
DEFAULT_LEADER_RETRY_PERIOD_MS = 500

# Where the flat file is looked for when the NAD sets no configuration_path
# (which, when set, is looked at first); the first existing file is used.
FLAT_FILE_CANDIDATES: tuple[str, ...] = (
    "/etc/kubernetes/cni/net.d/whereabouts.d/whereabouts.conf",
    "/etc/cni/net.d/whereabouts.d/whereabouts.conf",
    "/host/etc/cni/net.d/whereabouts.d/whereabouts.conf",
)

_RANGE_KEYS = frozenset({"range", "range_start", "range_end", "exclude"})
_KNOWN_KEYS = _RANGE_KEYS | {
    "type",
    "ipRanges",
    "gateway",
    "network_name",
    "enable_overlapping_ranges",
    "kubernetes",
    "configuration_path",
    "log_file",
    "log_level",
    "leader_lease_duration",
    "leader_renew_deadline",
    "leader_retry_period",
    "reconciler_cron_expression",
    "node_slice_size",
    "sleep_for_race",
    "routes",
    "dns",
    "addresses",
    "daemon_socket",
}
_KUBERNETES_KEYS = frozenset({"kubeconfig", "k8s_api_root"})

# The longest name built from network_name is the Lease of a block of a large
# range: "whereabouts-py-pool-" + network_name + "-" + an IPv6 CIDR (at most 43
# characters); Kubernetes allows 253.
NETWORK_NAME_MAX = 189
# Lease settings end up in Lease.spec.leaseDurationSeconds, an int32.
MILLISECONDS_MAX = 2**31 - 1
# Linux limits: a path of at most PATH_MAX bytes, each component NAME_MAX bytes.
PATH_MAX = 4095
NAME_MAX = 255
# Keys DEL and GC need to find and release what an attachment holds. The
# others (routes, dns, log settings, ...) only matter to ADD, so a value that
# is invalid there never keeps a DEL from releasing.
RELEASE_KEYS = frozenset(
    {
        "type",
        "range",
        "range_start",
        "range_end",
        "exclude",
        "ipRanges",
        "network_name",
        "enable_overlapping_ranges",
        "configuration_path",
        "daemon_socket",
    }
)
# Keys of a routes entry (CNI 1.1.0) that hold whole numbers.
_ROUTE_NUMBERS = ("mtu", "advmss", "priority", "table", "scope")
_DNS_LISTS = ("nameservers", "search", "options")
# An IPv4 address whose octets may carry leading zeroes, as Kubernetes' (and
# so whereabouts') ParseIPSloppy reads them: decimal, each at most 255.
_SLOPPY_IPV4 = re.compile(r"([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9]+)")


@dataclass(frozen=True)
class IPAMConfig:
    """A validated ``ipam`` section.

    ``ranges`` holds one AddressRange per address the pod gets: the top-level
    ``range`` first (with the top-level bounds and ``exclude``), then each
    ``ipRanges`` entry with its own. Durations are milliseconds.
    """

    ranges: tuple[AddressRange, ...]
    type: str = "whereabouts"
    gateway: netaddr.IPAddress | None = None
    network_name: str | None = None
    enable_overlapping_ranges: bool = True
    kubeconfig: str | None = None
    k8s_api_root: str | None = None
    configuration_path: str | None = None
    log_file: str | None = None
    log_level: str | None = None
    leader_lease_duration: int = DEFAULT_LEADER_LEASE_DURATION_MS
    leader_renew_deadline: int = DEFAULT_LEADER_RENEW_DEADLINE_MS
    leader_retry_period: int = DEFAULT_LEADER_RETRY_PERIOD_MS
    reconciler_cron_expression: str | None = None
    node_slice_size: str | None = None
    sleep_for_race: int = 0
    # Passed through to the CNI result unchanged.
    routes: Any = None
    dns: Any = None
    addresses: Any = None
    daemon_socket: str | None = None
    warnings: tuple[str, ...] = field(default=(), compare=False)


def _is_unset(value: object) -> bool:
    # Go decodes null and "" alike into its zero value, which means "not set".
    return value is None or value == ""


def _string(section: Mapping[str, Any], key: str, path: str | None = None) -> str | None:
    value = section.get(key)
    if _is_unset(value):
        return None
    if not isinstance(value, str):
        raise ConfigError(path or key, value, "must be a string")
    return value


def _milliseconds(section: Mapping[str, Any], key: str, default: int) -> int:
    value = section.get(key)
    # 0 means "unset" for the Go project, which then applies its default.
    if value is None or value == 0:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, value, "must be a whole number of milliseconds")
    if value < 0:
        raise ConfigError(key, value, "must be a positive number of milliseconds")
    if value > MILLISECONDS_MAX:
        raise ConfigError(key, value, f"must be at most {MILLISECONDS_MAX} milliseconds")
    return value


def _non_negative_int(section: Mapping[str, Any], key: str, default: int) -> int:
    value = section.get(key)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MILLISECONDS_MAX:
        raise ConfigError(key, value, f"must be a whole number from 0 to {MILLISECONDS_MAX}")
    return value


def _list(section: Mapping[str, Any], key: str, path: str | None = None) -> list[Any]:
    value = section.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(path or key, value, "must be a list")
    return value


def _unsloppy_address(text: str) -> str:
    """An IPv4 address with leading zeroes in its octets read as Kubernetes' ParseIPSloppy does.

    Anything else comes back unchanged, for the strict parser to judge.
    """
    match = _SLOPPY_IPV4.fullmatch(text.strip())
    if match is None:
        return text
    octets = [part.lstrip("0") or "0" for part in match.groups()]
    if any(len(octet) > 3 or int(octet) > 255 for octet in octets):
        return text
    return ".".join(octets)


def _unsloppy_prefix(text: str, key: str, original: object) -> str:
    """A prefix length without leading zeroes (Go's ParseCIDR reads ``/024`` as 24)."""
    if text.isascii() and text.isdigit():
        text = text.lstrip("0") or "0"
        if len(text) > 3:
            raise ConfigError(key, original, "not a CIDR: the prefix must be a number up to 128")
    return text


def _sloppy_cidr(text: Any, key: str) -> Any:
    """A CIDR (or ``first-last/prefix``) with sloppy IPv4 octets made standard."""
    if not isinstance(text, str):
        return text
    body, slash, prefix = text.strip().partition("/")
    first, dash, last = body.partition("-")
    body = (
        f"{_unsloppy_address(first)}-{_unsloppy_address(last)}"
        if dash
        else (_unsloppy_address(body))
    )
    return f"{body}/{_unsloppy_prefix(prefix, key, text)}" if slash else body


def _sloppy_ip(text: Any) -> Any:
    return _unsloppy_address(text) if isinstance(text, str) else text


def _exclude_list(exclude: list[Any], prefix: str) -> list[Any]:
    return [_sloppy_cidr(item, f"{prefix}exclude[{index}]") for index, item in enumerate(exclude)]


def _strict_network(text: object, key: str) -> netaddr.IPNetwork:
    """A CIDR as Go's net.ParseCIDR reads it (no leading zeroes in IPv4 octets)."""
    if not isinstance(text, str):
        raise ConfigError(key, text, "must be a string holding a CIDR")
    address, slash, prefix = text.strip().partition("/")
    if not slash:
        raise ConfigError(key, text, "not a CIDR (expected address/prefix)")
    try:
        return parse_network(f"{address}/{_unsloppy_prefix(prefix, key, text)}", key)
    except ConfigError:
        raise ConfigError(key, text, "not a CIDR (expected address/prefix)") from None


def _range_settings(
    section: Mapping[str, Any], prefix: str
) -> tuple[str | None, str | None, list[str]]:
    """range_start, range_end and exclude of one range, type-checked."""
    range_start = _string(section, "range_start", f"{prefix}range_start")
    range_end = _string(section, "range_end", f"{prefix}range_end")
    exclude = _list(section, "exclude", f"{prefix}exclude")
    return range_start, range_end, exclude


def _parse_ranges(
    ipam: Mapping[str, Any], gateway: netaddr.IPAddress | None, warnings: list[str]
) -> tuple[tuple[AddressRange, str, str], ...]:
    """Every configured range, with the key that configures it and its text."""
    ranges: list[tuple[AddressRange, str, str]] = []
    top_range = _string(ipam, "range")
    range_start, range_end, exclude = _range_settings(ipam, "")
    if top_range is not None:
        # The Go project reads these loosely: leading zeroes, and a bound that
        # does not parse is ignored (parse_range warns).
        parsed, range_warnings = parse_range(
            _sloppy_cidr(top_range, "range"),
            range_start=_sloppy_ip(range_start),
            range_end=_sloppy_ip(range_end),
            exclude=_exclude_list(exclude, ""),
            gateway=gateway,
        )
        ranges.append((parsed, "range", top_range))
        warnings.extend(range_warnings)
    else:
        for key in ("range_start", "range_end", "exclude"):
            if not _is_unset(ipam.get(key)) and ipam.get(key) != []:
                warnings.append(
                    f"{key}: ignored without a top-level range (each ipRanges entry takes its own)"
                )

    for index, entry in enumerate(_list(ipam, "ipRanges")):
        prefix = f"ipRanges[{index}]."
        if not isinstance(entry, Mapping):
            raise ConfigError(f"ipRanges[{index}]", entry, "must be an object with a range")
        entry_range = _string(entry, "range", f"{prefix}range")
        if entry_range is None:
            raise ConfigError(
                f"{prefix}range", entry.get("range"), "missing: every entry needs one"
            )
        for key in entry:
            if key not in _RANGE_KEYS:
                warnings.append(f"{prefix}{key}: unknown key; ignored")
        start, end, entry_exclude = _range_settings(entry, prefix)
        # An entry's bounds are decoded strictly by the Go project (net.IP):
        # one that does not parse fails the configuration there, so here too.
        for key, bound in (("range_start", start), ("range_end", end)):
            if bound is not None:
                parse_address(bound, f"{prefix}{key}")
                if bound != bound.strip():
                    raise ConfigError(f"{prefix}{key}", bound, "not an IP address")
        parsed, range_warnings = parse_range(
            _sloppy_cidr(entry_range, f"{prefix}range"),
            range_start=start,
            range_end=end,
            exclude=_exclude_list(entry_exclude, prefix),
            gateway=gateway,
            key_prefix=prefix,
        )
        ranges.append((parsed, f"{prefix}range", entry_range))
        warnings.extend(range_warnings)

    if not ranges:
        raise ConfigError(
            "range", ipam.get("range"), "no range configured", "set range or ipRanges"
        )
    seen: dict[netaddr.IPNetwork, int] = {}
    for index, (address_range, _key, _text) in enumerate(ranges):
        if address_range.network in seen:
            warnings.append(
                f"{address_range.cidr} is configured more than once; the entries share one "
                "pool, so a pod gets the same address from each"
            )
        seen.setdefault(address_range.network, index)
    return tuple(ranges)


def _network_name(ipam: Mapping[str, Any]) -> str | None:
    """``network_name``, which prefixes every object name of the network."""
    name = _string(ipam, "network_name")
    if name is None:
        return None
    if len(name) > NETWORK_NAME_MAX or not is_object_name(name):
        raise ConfigError(
            "network_name",
            name,
            "not usable in Kubernetes object names",
            f"it prefixes IPPool and reservation names, so it must be {SUBDOMAIN_RULE}, "
            f"and at most {NETWORK_NAME_MAX} characters long",
        )
    return name


def _check_object_names(
    ranges: Sequence[tuple[AddressRange, str, str]],
    network_name: str | None,
    overlapping: bool,
) -> None:
    """Every IPPool and reservation name of the ranges must be one Kubernetes accepts."""
    for address_range, key, text in ranges:
        names = [("IPPool", pool_name(address_range.network, network_name))]
        if overlapping and address_range.capacity() > 0:
            for offset in (address_range.first_offset, address_range.last_offset):
                address = address_range.address_at(offset)
                names.append(
                    ("OverlappingRangeIPReservation", reservation_name(address, network_name))
                )
        for kind, name in names:
            if not is_object_name(name):
                raise ConfigError(
                    key,
                    text,
                    f"its {kind} would be named {name!r}, which Kubernetes refuses",
                    f"object names must be {SUBDOMAIN_RULE}; set network_name to give "
                    "this network's objects a prefix",
                )


def _parse_kubernetes(
    ipam: Mapping[str, Any], warnings: list[str]
) -> tuple[str | None, str | None]:
    section = ipam.get("kubernetes")
    if section is None:
        return None, None
    if not isinstance(section, Mapping):
        raise ConfigError("kubernetes", section, "must be an object like {kubeconfig: <path>}")
    for key in section:
        if key not in _KUBERNETES_KEYS:
            warnings.append(f"kubernetes.{key}: unknown key; ignored")
    return (
        _string(section, "kubeconfig", "kubernetes.kubeconfig"),
        _string(section, "k8s_api_root", "kubernetes.k8s_api_root"),
    )


def _strict_ip(value: object, key: str) -> None:
    """An optional address as Go's net.IP decodes it: unset, or a valid address."""
    if _is_unset(value):
        return
    if not isinstance(value, str) or value != value.strip():
        raise ConfigError(key, value, "must be a string holding an IP address")
    parse_address(value, key)


def _whole_number(value: object, key: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > 2**63 - 1:
        raise ConfigError(key, value, "must be a whole number")


def _routes(ipam: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """``routes``: a list of {dst: CIDR, gw: IP, ...}, as the CNI result carries them."""
    routes = ipam.get("routes")
    if routes is None:
        return None
    if not isinstance(routes, list):
        raise ConfigError("routes", routes, 'must be a list of routes like {"dst": "0.0.0.0/0"}')
    for index, route in enumerate(routes):
        key = f"routes[{index}]"
        if not isinstance(route, Mapping):
            raise ConfigError(key, route, 'must be an object like {"dst": "0.0.0.0/0"}')
        if _is_unset(route.get("dst")):
            raise ConfigError(f"{key}.dst", route.get("dst"), "missing: every route needs one")
        _strict_network(route["dst"], f"{key}.dst")
        _strict_ip(route.get("gw"), f"{key}.gw")
        for number in _ROUTE_NUMBERS:
            _whole_number(route.get(number), f"{key}.{number}")
    return copy.deepcopy(routes)


def _dns(ipam: Mapping[str, Any]) -> dict[str, Any] | None:
    """``dns``: {nameservers, domain, search, options}, as the CNI result carries it."""
    dns = ipam.get("dns")
    if dns is None:
        return None
    if not isinstance(dns, Mapping):
        raise ConfigError("dns", dns, 'must be an object like {"nameservers": ["10.0.0.10"]}')
    for key in _DNS_LISTS:
        value = dns.get(key)
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(item, str) for item in value)
        ):
            raise ConfigError(f"dns.{key}", value, "must be a list of strings")
    domain = dns.get("domain")
    if domain is not None and not isinstance(domain, str):
        raise ConfigError("dns.domain", domain, "must be a string")
    return copy.deepcopy(dict(dns))


def _addresses(ipam: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """``addresses``: static {address: CIDR, gateway: IP} entries."""
    addresses = ipam.get("addresses")
    if addresses is None:
        return None
    if not isinstance(addresses, list):
        raise ConfigError(
            "addresses", addresses, 'must be a list like [{"address": "10.0.0.5/24"}]'
        )
    canonical: list[dict[str, Any]] = []
    for index, entry in enumerate(addresses):
        key = f"addresses[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(key, entry, 'must be an object like {"address": "10.0.0.5/24"}')
        address = entry.get("address")
        if not isinstance(address, str) or "/" not in address:
            raise ConfigError(f"{key}.address", address, "must be a CIDR like 10.0.0.5/24")
        text = _sloppy_cidr(address, f"{key}.address")
        host, _slash, prefix = text.partition("/")
        try:
            parsed = parse_address(host, f"{key}.address")
            parse_network(text, f"{key}.address")
        except ConfigError:
            raise ConfigError(
                f"{key}.address", address, "not a CIDR (expected address/prefix)"
            ) from None
        _strict_ip(entry.get("gateway"), f"{key}.gateway")
        # The result carries it as whereabouts prints it: in standard notation.
        canonical.append({**copy.deepcopy(dict(entry)), "address": f"{parsed}/{int(prefix)}"})
    return canonical


def _node_slice_size(ipam: Mapping[str, Any]) -> str | None:
    value = ipam.get("node_slice_size")
    if _is_unset(value):
        return None
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not re.fullmatch(r"/?[0-9]{1,3}", text, re.ASCII):
        raise ConfigError("node_slice_size", value, 'must be a prefix like "/28"')
    return text


def usable_path(path: str) -> bool:
    """Whether ``path`` can name a file at all (Linux: no NUL, PATH_MAX, NAME_MAX)."""
    if "\0" in path:
        return False
    try:
        encoded = os.fsencode(path)
    except (UnicodeError, ValueError):
        return False
    return len(encoded) <= PATH_MAX and all(len(part) <= NAME_MAX for part in encoded.split(b"/"))


def _configuration_path(ipam: Mapping[str, Any]) -> str | None:
    path = _string(ipam, "configuration_path")
    if path is not None and not usable_path(path):
        raise ConfigError(
            "configuration_path",
            path,
            "cannot name a file",
            f"a path is at most {PATH_MAX} bytes, each part at most {NAME_MAX}, with no NUL",
        )
    return path


def parse_ipam_config(ipam: Mapping[str, Any]) -> IPAMConfig:
    """Validate an ``ipam`` section (already merged with the flat file)."""
    if not isinstance(ipam, Mapping):
        raise ConfigError("ipam", ipam, "must be an object")
    warnings: list[str] = []
    for key in ipam:
        if key == "datastore" or key.startswith("etcd_"):
            warnings.append(
                f"{key}: ignored; the etcd backend was removed, addresses live in Kubernetes"
            )
        elif key not in _KNOWN_KEYS:
            warnings.append(f"{key}: unknown key; ignored")

    gateway_text = _string(ipam, "gateway")
    gateway = (
        parse_address(_sloppy_ip(gateway_text), "gateway") if gateway_text is not None else None
    )
    configured = _parse_ranges(ipam, gateway, warnings)
    ranges = tuple(address_range for address_range, _key, _text in configured)
    if gateway is not None and not any(r.contains(gateway) for r in ranges):
        warnings.append(f"gateway={gateway_text}: outside every range; accepted as is")

    log_level = _string(ipam, "log_level")
    if log_level is not None:
        if log_level.lower() not in LOG_LEVELS:
            raise ConfigError("log_level", log_level, f"must be one of {', '.join(LOG_LEVELS)}")
        log_level = log_level.lower()

    overlapping = ipam.get("enable_overlapping_ranges")
    if overlapping is not None and not isinstance(overlapping, bool):
        raise ConfigError("enable_overlapping_ranges", overlapping, "must be true or false")

    network_name = _network_name(ipam)
    _check_object_names(configured, network_name, overlapping is not False)
    kubeconfig, k8s_api_root = _parse_kubernetes(ipam, warnings)
    return IPAMConfig(
        ranges=ranges,
        type=_string(ipam, "type") or "whereabouts",
        gateway=gateway,
        network_name=network_name,
        enable_overlapping_ranges=True if overlapping is None else overlapping,
        kubeconfig=kubeconfig,
        k8s_api_root=k8s_api_root,
        configuration_path=_configuration_path(ipam),
        log_file=_string(ipam, "log_file"),
        log_level=log_level,
        leader_lease_duration=_milliseconds(
            ipam, "leader_lease_duration", DEFAULT_LEADER_LEASE_DURATION_MS
        ),
        leader_renew_deadline=_milliseconds(
            ipam, "leader_renew_deadline", DEFAULT_LEADER_RENEW_DEADLINE_MS
        ),
        leader_retry_period=_milliseconds(
            ipam, "leader_retry_period", DEFAULT_LEADER_RETRY_PERIOD_MS
        ),
        reconciler_cron_expression=_string(ipam, "reconciler_cron_expression"),
        node_slice_size=_node_slice_size(ipam),
        sleep_for_race=_non_negative_int(ipam, "sleep_for_race", 0),
        routes=_routes(ipam),
        dns=_dns(ipam),
        addresses=_addresses(ipam),
        daemon_socket=_string(ipam, "daemon_socket"),
        warnings=tuple(warnings),
    )


def parse_network_config(netconf: Mapping[str, Any]) -> IPAMConfig:
    """The ``ipam`` section of a whole CNI network configuration, validated."""
    ipam = netconf.get("ipam")
    if ipam is None:
        raise ConfigError("ipam", None, "missing from the network configuration")
    return parse_ipam_config(ipam)


def release_view(ipam: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an ``ipam`` section DEL and GC need to release what is held.

    Keys only ADD uses are left out, so that a value invalid there (routes,
    dns, a log setting, a lease setting) never keeps an attachment from being
    released; a ``configuration_path`` that cannot name a file is left out
    too, so the flat file is looked for where it usually is.
    """
    view = {key: value for key, value in ipam.items() if key in RELEASE_KEYS}
    path = view.get("configuration_path")
    if isinstance(path, str) and not usable_path(path):
        del view["configuration_path"]
    return view


def flat_file_candidates(configuration_path: str | None) -> list[str]:
    """Paths to try for the flat file, in order; the first that exists wins.

    A ``configuration_path`` that cannot name a file is not tried (parsing
    the configuration reports it).
    """
    head = [configuration_path] if configuration_path and usable_path(configuration_path) else []
    return head + list(FLAT_FILE_CANDIDATES)


def merge_flat_file(ipam: Mapping[str, Any], flat: Mapping[str, Any]) -> dict[str, Any]:
    """The NAD's ``ipam`` with the values it lacks taken from the flat file.

    NAD values win. As in the Go project, null and "" count as missing, and
    objects (``kubernetes``) are merged key by key; lists are never merged.
    A flat file nested deeper than any configuration may be is refused.
    """
    if nesting_depth(flat) > MAX_DEPTH:
        raise ConfigError(
            "configuration file", "(flat file)", f"nests JSON deeper than {MAX_DEPTH} levels"
        )
    merged = copy.deepcopy(dict(ipam))
    for key, flat_value in flat.items():
        value = merged.get(key)
        if _is_unset(value):
            merged[key] = copy.deepcopy(flat_value)
        elif isinstance(value, Mapping) and isinstance(flat_value, Mapping):
            merged[key] = merge_flat_file(value, flat_value)
    return merged


def parse_cni_args(cni_args: str) -> dict[str, str]:
    """CNI_ARGS (``K=V;K2=V2``) as a dict; empty segments are skipped."""
    parsed: dict[str, str] = {}
    for pair in cni_args.split(";"):
        if not pair:
            continue
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise InvalidEnvironmentError(
                "malformed CNI_ARGS",
                f"{pair!r} is not KEY=VALUE; CNI_ARGS must be KEY=VALUE pairs separated by ';'",
            )
        parsed[key] = value
    return parsed


def _requested(text: object, key: str) -> netaddr.IPAddress:
    """An address that may carry a /prefix, which is dropped."""
    if not isinstance(text, str):
        raise ConfigError(key, text, "must be a string holding an IP address")
    address_text, slash, prefix = text.strip().partition("/")
    try:
        if slash and not (prefix.isascii() and prefix.isdigit()):
            raise ConfigError(key, text, "has an invalid prefix")
        return parse_address(address_text, key)
    except ConfigError:
        raise ConfigError(key, text, "not an IP address (optionally with a /prefix)") from None


def requested_addresses(
    cni_args: str, runtime_config: Mapping[str, Any] | None
) -> list[netaddr.IPAddress]:
    """Addresses the pod asks for: CNI_ARGS ``IP=`` then ``runtimeConfig.ips``, deduplicated."""
    requested: list[netaddr.IPAddress] = []
    ip_arg = parse_cni_args(cni_args).get("IP", "")
    for item in ip_arg.split(","):
        if item.strip():
            requested.append(_requested(item, "CNI_ARGS IP"))
    if runtime_config is not None:
        if not isinstance(runtime_config, Mapping):
            raise ConfigError("runtimeConfig", runtime_config, "must be an object")
        ips = runtime_config.get("ips")
        if ips is not None:
            if not isinstance(ips, Sequence) or isinstance(ips, str):
                raise ConfigError("runtimeConfig.ips", ips, "must be a list of IP addresses")
            requested.extend(_requested(item, "runtimeConfig.ips") for item in ips)
    return list(dict.fromkeys(requested))
