"""A relay that makes the host's apiserver reachable from inside node namespaces.

The apiserver listens on the host's loopback, which a node netns cannot
reach. The relay listens on ``127.0.0.1:<apiserver port>`` inside each node
netns and forwards to the real one, so the admin kubeconfig works unchanged
there, TLS end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Sequence

from whereabouts_py_dev.netns import inside_netns


class ApiRelay:
    """Serves ``127.0.0.1:<port>`` inside each node netns, forwarding to the host's loopback."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="lab-apiserver-relay", daemon=True
        )
        self._servers: list[asyncio.Server] = []
        self._streams: set[asyncio.StreamWriter] = set()

    def start(self, netns_names: Sequence[str], also: Sequence[tuple[str, int]] = ()) -> None:
        """Listen in every netns on ``127.0.0.1:<port>`` and on each address in ``also``."""
        self._thread.start()
        for netns in netns_names:
            for address in (("127.0.0.1", self.port), *also):
                self._listen(netns, address)

    def _listen(self, netns: str, address: tuple[str, int]) -> None:
        with inside_netns(netns):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen(64)
            listener.setblocking(False)
            started = asyncio.run_coroutine_threadsafe(
                asyncio.start_server(self._serve, sock=listener), self._loop
            )
            self._servers.append(started.result(timeout=10))
        except BaseException:
            listener.close()
            raise

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._streams.add(writer)
        try:
            # This coroutine runs on the relay thread, which never leaves the
            # host's netns: the upstream connection reaches the real apiserver.
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            self._streams.discard(writer)
            writer.close()
            return
        self._streams.add(up_writer)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for stream in (writer, up_writer):
                self._streams.discard(stream)
                stream.close()

    @staticmethod
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

    def stop(self) -> None:
        """Close every socket (a socket in a netns keeps that netns alive) and the thread."""
        if not self._thread.is_alive():
            self._loop.close()
            return

        async def shutdown() -> None:
            for server in self._servers:
                server.close()
            for stream in list(self._streams):
                stream.close()
            current = asyncio.current_task()
            tasks = [task for task in asyncio.all_tasks() if task is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
