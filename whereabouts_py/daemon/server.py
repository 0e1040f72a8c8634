"""The node daemon's unix socket: one request line in, one answer line out.

Anything that can open the socket is served with bounded resources, because a
local process may open connections and never write, or write garbage:

* One thread watches the listening socket and every connection still sending
  its request (non-blocking, ``selectors``), so an idle connection costs a file
  descriptor, not a thread. A connection that has not sent a whole request line
  within ``read_timeout_s`` is answered code 6 and closed.
* At most ``max_connections`` are open at once. Over the cap the oldest
  connection still sending its request is dropped to make room (an idle flood
  never locks out a shim), and only when every open connection is being served
  is the newcomer answered code 11 ("busy, retry").
* A request line is at most ``wire.MAX_MESSAGE_BYTES``; a longer one is
  answered code 7 with the limit, never read further.
* Complete requests are served by a pool of ``workers`` threads. Each request
  is checked as the shim checks it (``wire.check_request``: command, container
  ID, interface name, netns path, pod reference, sizes, nesting) before the
  service sees it; DEL and GC get only the configuration keys a release needs
  (``core.config.release_view``), so an invalid ADD-only key never keeps an
  address from being released.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import selectors
import socket
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whereabouts_py.cni import limits, wire
from whereabouts_py.core.config import release_view
from whereabouts_py.daemon import deadline
from whereabouts_py.daemon.service import IPAMService
from whereabouts_py.errors import (
    CODE_DECODE_FAILURE,
    CODE_INTERNAL,
    CODE_INVALID_CONFIG,
    CODE_TRY_AGAIN,
    DecodeError,
    WhereaboutsError,
)
from whereabouts_py.metrics import daemon as metrics

log = logging.getLogger(__name__)

# How long a connection may take to send its whole request line (the shim sends
# it at once, right after connecting).
READ_TIMEOUT_S = 5.0
# How long writing an answer may take before the connection is given up.
WRITE_TIMEOUT_S = 10.0
# Connections open at once (requests being read or served).
MAX_CONNECTIONS = 1024
# Threads serving complete requests; a pool's writer batches what they queue.
WORKERS = 256
# File descriptors kept free for the API client, metrics and logs.
RESERVED_FDS = 128
_CHUNK = 65536


@dataclass
class _Reading:
    """A connection whose request line is still arriving."""

    sock: socket.socket
    deadline: float
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0


def _error_line(code: int, msg: str, details: str = "") -> bytes:
    return wire.encode({"error": {"code": code, "msg": msg, "details": details}})


def connection_cap(wanted: int = MAX_CONNECTIONS) -> int:
    """``wanted``, lowered to what the process's file descriptor limit allows."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(16, min(wanted, soft - RESERVED_FDS))


class DaemonServer:
    """Serves the shim on a unix socket (mode 0600) until ``shutdown``."""

    def __init__(
        self,
        socket_path: str,
        service: IPAMService,
        *,
        read_timeout_s: float = READ_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
        workers: int = WORKERS,
    ) -> None:
        path = Path(socket_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise WhereaboutsError(f"--socket {socket_path} exists and is not a socket")
            path.unlink()
        self.service = service
        self.socket_path = socket_path
        self.read_timeout_s = read_timeout_s
        self.max_connections = connection_cap(max_connections)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is born 0600
        try:
            self._listener.bind(socket_path)
        finally:
            os.umask(old_umask)
        os.chmod(socket_path, 0o600)
        self._listener.listen(min(self.max_connections, socket.SOMAXCONN))
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._reading: dict[int, _Reading] = {}  # by file descriptor, oldest first
        self._serving = 0  # connections handed to the workers, not yet closed
        self._serving_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="request")
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self.last_turn = time.monotonic()  # when the loop last went round (for /healthz)

    # --- the loop -----------------------------------------------------------------------
    def serve_forever(self, poll_interval: float = 0.2) -> None:
        self._stopped.clear()
        self._selector.register(self._listener, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                self.last_turn = time.monotonic()
                for key, _events in self._selector.select(timeout=poll_interval):
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        self._receive(key.fd)
                self._expire(time.monotonic())
        finally:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self._listener)
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop the loop and wait until it has stopped (from another thread)."""
        self._stop.set()
        self._stopped.wait()

    def server_close(self) -> None:
        self._listener.close()
        for fd in list(self._reading):
            self._close_reading(fd)
        self._selector.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def open_connections(self) -> int:
        with self._serving_lock:
            return len(self._reading) + self._serving

    # --- accepting ------------------------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(256):  # then let the readers have a turn
            try:
                sock, _address = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as error:  # e.g. out of file descriptors: wait, do not spin
                log.warning("cannot accept a connection: %s", error)
                time.sleep(0.05)
                return
            if self.open_connections >= self.max_connections and not self._make_room():
                self._refuse(sock)
                continue
            sock.setblocking(False)
            fd = sock.fileno()
            self._reading[fd] = _Reading(sock, time.monotonic() + self.read_timeout_s)
            self._selector.register(fd, selectors.EVENT_READ)

    def _make_room(self) -> bool:
        """Drop the oldest connection still sending its request; False if there is none."""
        oldest = next(iter(self._reading), None)
        if oldest is None:
            return False
        log.warning(
            "connection cap %d reached: dropping the oldest connection that has not sent a request",
            self.max_connections,
        )
        self._close_reading(oldest, CODE_TRY_AGAIN, "the daemon dropped this idle connection")
        return True

    def _refuse(self, sock: socket.socket) -> None:
        log.warning("connection cap %d reached: refusing a connection", self.max_connections)
        with contextlib.closing(sock):
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.send(
                    _error_line(
                        CODE_TRY_AGAIN,
                        f"the whereabouts-py daemon is serving its limit of "
                        f"{self.max_connections} connections",
                        "retry in a moment",
                    )
                )

    # --- reading --------------------------------------------------------------------------
    def _receive(self, fd: int) -> None:
        reading = self._reading.get(fd)
        if reading is None:
            return
        try:
            chunk = reading.sock.recv(_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            self._close_reading(fd)
            return
        if not chunk:  # closed before a whole request: nobody to answer
            self._close_reading(fd)
            return
        newline = chunk.find(b"\n")
        if newline >= 0:
            chunk = chunk[: newline + 1]
        reading.chunks.append(chunk)
        reading.size += len(chunk)
        if reading.size > wire.MAX_MESSAGE_BYTES:
            self._close_reading(
                fd,
                CODE_INVALID_CONFIG,
                f"request larger than the limit of {wire.MAX_MESSAGE_BYTES} bytes",
                "make the network configuration smaller",
            )
            return
        if newline >= 0:
            self._hand_over(fd, b"".join(reading.chunks))

    def _expire(self, now: float) -> None:
        while self._reading:
            fd, reading = next(iter(self._reading.items()))
            if reading.deadline > now:
                break  # oldest first: the rest are younger
            self._close_reading(
                fd,
                CODE_DECODE_FAILURE,
                f"no complete request line within {self.read_timeout_s:g}s",
                "send one JSON request terminated by a newline right after connecting",
            )

    def _close_reading(self, fd: int, code: int = 0, msg: str = "", details: str = "") -> None:
        reading = self._reading.pop(fd)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(fd)
        with contextlib.closing(reading.sock):
            if code:
                with contextlib.suppress(OSError):
                    reading.sock.send(_error_line(code, msg, details))

    def _hand_over(self, fd: int, line: bytes) -> None:
        reading = self._reading.pop(fd)
        self._selector.unregister(fd)
        with self._serving_lock:
            self._serving += 1
        try:
            self._executor.submit(self._serve, reading.sock, line)
        except RuntimeError:  # shutting down
            self._done(reading.sock)

    # --- serving --------------------------------------------------------------------------
    def _serve(self, sock: socket.socket, line: bytes) -> None:
        try:
            # The work stops at its next step once the shim hangs up (daemon.deadline).
            with deadline.serving(sock):
                answer = self._answer(line)
            sock.setblocking(True)
            sock.settimeout(WRITE_TIMEOUT_S)
            try:
                sock.sendall(wire.encode(answer))
            except OSError:
                log.info("the shim went away before the answer")
        finally:
            self._done(sock)

    def _done(self, sock: socket.socket) -> None:
        sock.close()
        with self._serving_lock:
            self._serving -= 1

    def _answer(self, line: bytes) -> dict[str, Any]:
        started = time.perf_counter()
        command = "?"
        code = 0
        try:
            try:
                request = wire.decode(line)
            except RecursionError:
                raise DecodeError(
                    "malformed message on the daemon socket",
                    f"JSON nested deeper than {limits.MAX_DEPTH} levels",
                ) from None
            raw_command = request.get("command")
            command = raw_command if raw_command in wire.VERBS else "?"
            wire.check_request(request)
            answer: dict[str, Any] = {"result": self.service.handle(_for_service(request))}
        except WhereaboutsError as error:
            code = error.code
            answer = {"error": {"code": error.code, "msg": error.msg, "details": error.details}}
            log.info("%s failed (code %d): %s", command, error.code, error)
        except Exception as error:
            code = CODE_INTERNAL
            log.exception("%s failed with an unexpected error", command)
            answer = {
                "error": {
                    "code": CODE_INTERNAL,
                    "msg": f"internal error in the whereabouts-py daemon: {type(error).__name__}",
                    "details": str(error),
                }
            }
        metrics.observe_request(command, code, time.perf_counter() - started)
        return answer


def _for_service(request: dict[str, Any]) -> dict[str, Any]:
    """The request the service gets: DEL and GC see only what a release needs."""
    config = request["config"]
    ipam = config.get("ipam")
    if request["command"] in ("DEL", "GC") and isinstance(ipam, dict):
        return dict(request, config=dict(config, ipam=release_view(ipam)))
    return request
