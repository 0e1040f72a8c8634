"""The lab's layer-2 segment: a switch (bridge) in its own netns, cables (veth) to it."""

from __future__ import annotations

from whereabouts_py_dev.netns import ip

SEGMENT_BRIDGE = "segment"


def make_switch(netns: str, name: str = SEGMENT_BRIDGE) -> None:
    """A bridge that floods multicast (no snooping): IPv6 neighbour discovery reaches every port."""
    ip("-n", netns, "link", "add", name, "type", "bridge", "mcast_snooping", "0")
    ip("-n", netns, "link", "set", name, "up")


def cable(segment_netns: str, netns: str, nic: str, prefix: str) -> None:
    """A veth from the segment's switch to ``nic`` in ``netns``, both ends up."""
    port = f"{prefix}-{nic}"
    peer = ("peer", "name", nic, "netns", netns)
    ip("-n", segment_netns, "link", "add", port, "type", "veth", *peer)
    ip("-n", segment_netns, "link", "set", port, "master", SEGMENT_BRIDGE, "up")
    ip("-n", netns, "link", "set", nic, "up")


def add_address(netns: str, nic: str, cidr: str) -> None:
    """An address usable at once (IPv6 without duplicate address detection)."""
    extra = ["nodad"] if ":" in cidr else []
    ip("-n", netns, "addr", "add", cidr, "dev", nic, *extra)
