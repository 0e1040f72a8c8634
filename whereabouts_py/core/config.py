"""The ``ipam`` section of a CNI network configuration, parsed and validated.

Accepts every key whereabouts v0.9.x accepts (DESIGN.md, "Compatibility
facts"), so an existing NetworkAttachmentDefinition keeps working unchanged.
Problems that would break an ADD are ConfigErrors naming the key path and the
offending value; everything the Go project tolerates (unknown keys, keys of
the removed etcd backend, misplaced ``range_start``/``range_end``) becomes a
warning collected in ``IPAMConfig.warnings``: this module never logs.

Also here, because they are parsing too: merging the flat file
(``whereabouts.conf``) into the NAD's values, the flat file lookup order,
CNI_ARGS, and the addresses a pod requests.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import netaddr

from whereabouts_py.core.addresses import AddressRange, parse_address, parse_range
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
    return value


def _non_negative_int(section: Mapping[str, Any], key: str, default: int) -> int:
    value = section.get(key)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(key, value, "must be a non-negative whole number")
    return value


def _list(section: Mapping[str, Any], key: str, path: str | None = None) -> list[Any]:
    value = section.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(path or key, value, "must be a list")
    return value


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
) -> tuple[AddressRange, ...]:
    ranges: list[AddressRange] = []
    top_range = _string(ipam, "range")
    range_start, range_end, exclude = _range_settings(ipam, "")
    if top_range is not None:
        parsed, range_warnings = parse_range(
            top_range,
            range_start=range_start,
            range_end=range_end,
            exclude=exclude,
            gateway=gateway,
        )
        ranges.append(parsed)
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
        parsed, range_warnings = parse_range(
            entry_range,
            range_start=start,
            range_end=end,
            exclude=entry_exclude,
            gateway=gateway,
            key_prefix=prefix,
        )
        ranges.append(parsed)
        warnings.extend(range_warnings)

    if not ranges:
        raise ConfigError(
            "range", ipam.get("range"), "no range configured", "set range or ipRanges"
        )
    seen: dict[netaddr.IPNetwork, int] = {}
    for index, address_range in enumerate(ranges):
        if address_range.network in seen:
            warnings.append(
                f"{address_range.cidr} is configured more than once; the entries share one "
                "pool, so a pod gets the same address from each"
            )
        seen.setdefault(address_range.network, index)
    return tuple(ranges)


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


def _passthrough(ipam: Mapping[str, Any], key: str, kind: type) -> Any:
    value = ipam.get(key)
    if value is None:
        return None
    if not isinstance(value, kind):
        what = "a list" if kind is list else "an object"
        raise ConfigError(key, value, f"must be {what}")
    # A copy, so the caller's dict and the frozen config never share state.
    return copy.deepcopy(value)


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
    gateway = parse_address(gateway_text, "gateway") if gateway_text is not None else None
    ranges = _parse_ranges(ipam, gateway, warnings)
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

    node_slice_size = ipam.get("node_slice_size")
    if isinstance(node_slice_size, bool) or not isinstance(node_slice_size, str | int | None):
        raise ConfigError("node_slice_size", node_slice_size, 'must be a prefix like "/28"')

    kubeconfig, k8s_api_root = _parse_kubernetes(ipam, warnings)
    return IPAMConfig(
        ranges=ranges,
        type=_string(ipam, "type") or "whereabouts",
        gateway=gateway,
        network_name=_string(ipam, "network_name"),
        enable_overlapping_ranges=True if overlapping is None else overlapping,
        kubeconfig=kubeconfig,
        k8s_api_root=k8s_api_root,
        configuration_path=_string(ipam, "configuration_path"),
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
        node_slice_size=None if _is_unset(node_slice_size) else str(node_slice_size),
        sleep_for_race=_non_negative_int(ipam, "sleep_for_race", 0),
        routes=_passthrough(ipam, "routes", list),
        dns=_passthrough(ipam, "dns", Mapping),
        addresses=_passthrough(ipam, "addresses", list),
        daemon_socket=_string(ipam, "daemon_socket"),
        warnings=tuple(warnings),
    )


def parse_network_config(netconf: Mapping[str, Any]) -> IPAMConfig:
    """The ``ipam`` section of a whole CNI network configuration, validated."""
    ipam = netconf.get("ipam")
    if ipam is None:
        raise ConfigError("ipam", None, "missing from the network configuration")
    return parse_ipam_config(ipam)


def flat_file_candidates(configuration_path: str | None) -> list[str]:
    """Paths to try for the flat file, in order; the first that exists wins."""
    head = [configuration_path] if configuration_path else []
    return head + list(FLAT_FILE_CANDIDATES)


def merge_flat_file(ipam: Mapping[str, Any], flat: Mapping[str, Any]) -> dict[str, Any]:
    """The NAD's ``ipam`` with the values it lacks taken from the flat file.

    NAD values win. As in the Go project, null and "" count as missing, and
    objects (``kubernetes``) are merged key by key; lists are never merged.
    """
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
