"""The apiserver's way to the nodes: an HTTP CONNECT proxy on a unix socket.

The apiserver runs on the host's loopback; kubelets listen inside their node
netns, which the host cannot reach. For ``kubectl exec``, ``logs`` and
``port-forward`` the apiserver dials kubelets through its egress selector
(``cluster`` traffic, ``HTTPConnect`` over a unix socket, as it would
through a konnectivity proxy): this proxy answers each ``CONNECT
host:port`` by connecting from inside the router's netns, which reaches
every node address and, through the nodes, every pod CIDR. A node name is
mapped to its address, since the apiserver names kubelets by hostname.
Nothing in the host's network configuration changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Mapping
from pathlib import Path

from whereabouts_py_dev.netns import inside_netns

MAX_HEADER_BYTES = 16384


def egress_selector_config(socket_path: Path) -> str:
    """The apiserver's ``--egress-selector-config-file`` content for this proxy."""
    return f"""\
apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: {socket_path}
"""


class EgressProxy:
    """Serves CONNECT on ``socket_path``; connects from ``netns``; ``hosts`` maps names to IPs."""

    def __init__(self, socket_path: Path, netns: str, hosts: Mapping[str, str]) -> None:
        self.socket_path = socket_path
        self.netns = netns
        self.hosts = dict(hosts)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self.socket_path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.socket_path))
        self.socket_path.chmod(0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.socket_path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        request = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(request) != 3 or request[0] != "CONNECT" or len(head) > MAX_HEADER_BYTES:
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            writer.close()
            return
        host, _, port = request[1].rpartition(":")
        host = self.hosts.get(host.strip("[]"), host.strip("[]"))
        try:
            up_reader, up_writer = await self._connect(host, int(port))
        except (OSError, ValueError) as error:
            writer.write(f"HTTP/1.1 502 Bad Gateway\r\n\r\n{error}".encode())
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()
            writer.close()

    async def _connect(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with inside_netns(self.netns):  # the socket stays in the router's netns
            sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(sock, (host, port)), timeout=10
            )
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            sink.write_eof()
