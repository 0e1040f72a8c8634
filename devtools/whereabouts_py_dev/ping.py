"""ICMP echo from inside a network namespace, IPv4 and IPv6, with a raw socket."""

from __future__ import annotations

import secrets
import socket
import struct
import time

from whereabouts_py_dev.netns import inside_netns


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ping(netns: str, target: str, timeout_s: float = 3.0, source: str | None = None) -> bool:
    """Whether ``target`` answers an ICMP echo sent from inside ``netns`` (IPv4 or IPv6).

    A raw socket made inside the netns; one echo every half second until a
    reply or the timeout (the first may wait for neighbour resolution).
    ``source`` binds the echo to one of the netns' addresses, which is what
    source-based routing (sbr) selects on.
    """
    v6 = ":" in target
    family = socket.AF_INET6 if v6 else socket.AF_INET
    protocol = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    request, reply = (128, 129) if v6 else (8, 0)
    ident = secrets.randbelow(0xFFFF)
    with inside_netns(netns):
        raw = socket.socket(family, socket.SOCK_RAW, protocol)
    with raw:
        if source is not None:
            raw.bind((source, 0))
        deadline = time.monotonic() + timeout_s
        sequence = 0
        while time.monotonic() < deadline:
            sequence += 1
            body = struct.pack("!HH", ident, sequence) + b"whereabouts-py lab"
            header = struct.pack("!BBH", request, 0, 0)
            if not v6:  # the kernel fills in the ICMPv6 checksum itself
                header = struct.pack("!BBH", request, 0, _checksum(header + body))
            raw.sendto(header + body, (target, 0))
            resend_at = min(deadline, time.monotonic() + 0.5)
            while (left := resend_at - time.monotonic()) > 0:
                raw.settimeout(left)
                try:
                    packet, source = raw.recvfrom(4096)
                except TimeoutError:
                    break
                icmp = packet if v6 else packet[(packet[0] & 0x0F) * 4 :]
                if (
                    len(icmp) >= 8
                    and icmp[0] == reply
                    and struct.unpack("!H", icmp[4:6])[0] == ident
                    and source[0].split("%")[0] == target
                ):
                    return True
    return False
