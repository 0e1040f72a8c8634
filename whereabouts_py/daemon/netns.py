"""CHECK's look inside a container's network namespace, with pyroute2.

Only namespaces that exist are entered: the path must name an existing file,
and pyroute2 is told not to create one (its default would create and mount a
new namespace at any path it is given).
"""

from __future__ import annotations

import os

import netaddr
from pyroute2 import NetNS

from whereabouts_py.errors import ContainerUnknownError


def address_configured(netns: str, ifname: str, address: str) -> bool:
    """True if ``address`` (ip/prefix) is set on ``ifname`` inside ``netns`` (a path)."""
    wanted = netaddr.IPNetwork(address)
    if not os.path.isabs(netns) or not os.path.exists(netns):
        raise ContainerUnknownError(
            f"network namespace {netns} does not exist",
            "CNI_NETNS must be the path of the container's existing network namespace",
        )
    try:
        with NetNS(netns, flags=0) as ns:  # 0: open only, never create
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
