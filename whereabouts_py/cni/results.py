"""Render the daemon's version-neutral result in the format of a CNI spec version.

Standard library only: the CNI shim imports this module.

The daemon answers ADD with::

    {"ips": [{"address": "10.1.2.3/24", "gateway": "10.1.2.1"}],
     "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.2.1"}],
     "dns": {"nameservers": ["10.1.2.1"]}}

Spec 0.3.0 to 0.4.0 tag every ``ips`` entry with ``"version": "4"`` or ``"6"``;
1.0.0 dropped that field; 1.1.0 added route attributes (``mtu``, ``advmss``,
``priority``, ``table``, ``scope``). An IPAM plugin creates no interface, so
results carry no ``interfaces`` and no ``interface`` index. Empty optional
fields are left out.
"""

from __future__ import annotations

from whereabouts_py.errors import WhereaboutsError

# typing and the collection ABCs cost milliseconds at every CNI call; they are
# only needed to type-check (the values checked at run time are plain dicts).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = "1.1.0"

_VERSIONS_WITH_IP_VERSION = frozenset({"0.3.0", "0.3.1", "0.4.0"})
_ROUTE_KEYS = ("dst", "gw")
_ROUTE_KEYS_1_1 = ("dst", "gw", "mtu", "advmss", "priority", "table", "scope")
_DNS_KEYS = ("nameservers", "domain", "search", "options")


def render(result: Mapping[str, Any], cni_version: str) -> dict[str, Any]:
    """The CNI result object for ``cni_version`` (one of SUPPORTED_VERSIONS)."""
    if cni_version not in SUPPORTED_VERSIONS:
        raise ValueError(f"cannot render a result for cniVersion {cni_version!r}")
    rendered: dict[str, Any] = {"cniVersion": cni_version}
    ips = [_render_ip(ip, cni_version) for ip in _list_of_objects(result, "ips")]
    if ips:
        rendered["ips"] = ips
    route_keys = _ROUTE_KEYS_1_1 if cni_version == "1.1.0" else _ROUTE_KEYS
    routes = [_pick(route, route_keys) for route in _list_of_objects(result, "routes")]
    if routes:
        rendered["routes"] = routes
    dns = result.get("dns")
    if dns is not None and not isinstance(dns, dict):
        raise _malformed("dns is not an object", dns)
    if dns:
        picked = _pick(dns, _DNS_KEYS)
        if picked:
            rendered["dns"] = picked
    return rendered


def ip_version(address: str) -> str:
    """ "4" or "6" for an address in CIDR notation."""
    return "6" if ":" in address else "4"


def _render_ip(ip: Mapping[str, Any], cni_version: str) -> dict[str, Any]:
    address = ip.get("address")
    if not isinstance(address, str) or "/" not in address:
        raise _malformed("an ips entry has no address in CIDR notation", ip)
    rendered: dict[str, Any] = {}
    if cni_version in _VERSIONS_WITH_IP_VERSION:
        rendered["version"] = ip_version(address)
    rendered["address"] = address
    gateway = ip.get("gateway")
    if gateway:
        rendered["gateway"] = gateway
    return rendered


def _list_of_objects(result: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = result.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise _malformed(f"{key} is not a list of objects", value)
    return value


def _pick(source: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: source[key] for key in keys if source.get(key) not in (None, "", [], {})}


def _malformed(problem: str, value: object) -> WhereaboutsError:
    return WhereaboutsError(
        f"the whereabouts-py daemon returned a malformed result: {problem}",
        f"got {value!r:.200}; the shim and daemon versions may differ",
    )
