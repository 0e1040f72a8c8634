"""CHECK's look inside a container's network namespace, with pyroute2."""

from __future__ import annotations

import netaddr
from pyroute2 import NetNS

from whereabouts_py.errors import ContainerUnknownError


def address_configured(netns: str, ifname: str, address: str) -> bool:
    """True if ``address`` (ip/prefix) is set on ``ifname`` inside ``netns`` (a path)."""
    wanted = netaddr.IPNetwork(address)
    try:
        with NetNS(netns) as ns:
            indexes = ns.link_lookup(ifname=ifname)
            if not indexes:
                return False
            for entry in ns.get_addr(index=indexes[0]):
                found = entry.get_attr("IFA_ADDRESS")
                if found is None:
                    continue
                if netaddr.IPAddress(found) == wanted.ip and entry["prefixlen"] == wanted.prefixlen:
                    return True
    except OSError as error:
        raise ContainerUnknownError(
            f"network namespace {netns} cannot be entered", str(error)
        ) from None
    return False
