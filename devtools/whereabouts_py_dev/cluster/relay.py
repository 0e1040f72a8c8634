"""The cluster's relays as a process of their own: ``python -m whereabouts_py_dev.cluster.relay``.

The cluster outlives the ``devcluster up`` command, so this process carries,
until SIGTERM, both directions between the host's loopback and the node
namespaces: the apiserver relay (``whereabouts_py_dev.relay.ApiRelay``:
``127.0.0.1:<port>`` inside every node netns reaches the apiserver) and the
egress proxy (``egress.EgressProxy``: the apiserver reaches the kubelets).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence
from pathlib import Path

from whereabouts_py_dev.cluster.egress import EgressProxy
from whereabouts_py_dev.relay import ApiRelay


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m whereabouts_py_dev.cluster.relay")
    parser.add_argument("--port", type=int, required=True, help="the apiserver's loopback port")
    parser.add_argument("--netns", action="append", required=True, help="a node netns (repeat)")
    parser.add_argument("--egress-socket", type=Path, required=True)
    parser.add_argument("--egress-netns", required=True, help="where the egress proxy dials from")
    parser.add_argument("--host", action="append", default=[], help="NAME=IP for the proxy")
    parser.add_argument(
        "--also", action="append", default=[], help="IP:PORT to serve too in every node netns"
    )
    args = parser.parse_args(argv)
    hosts = dict(item.split("=", 1) for item in args.host)
    also = [(item.rsplit(":", 1)[0], int(item.rsplit(":", 1)[1])) for item in args.also]
    proxy = EgressProxy(args.egress_socket, args.egress_netns, hosts)
    asyncio.run(_serve(args.port, args.netns, also, proxy))
    return 0


async def _serve(
    port: int, netns: list[str], also: list[tuple[str, int]], proxy: EgressProxy
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    relay = ApiRelay(port)
    relay.start(netns, also)
    await proxy.start()
    print(
        f"relay: apiserver 127.0.0.1:{port} in {', '.join(netns)}; egress {proxy.socket_path}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await proxy.close()
        relay.stop()


if __name__ == "__main__":
    raise SystemExit(main())
