"""The node daemon's unix socket: one request line in, one answer line out."""

from __future__ import annotations

import logging
import os
import socketserver
import stat
import time
from pathlib import Path
from typing import Any

from whereabouts_py.cni import wire
from whereabouts_py.daemon.service import IPAMService
from whereabouts_py.errors import CODE_INTERNAL, WhereaboutsError
from whereabouts_py.metrics import daemon as metrics

log = logging.getLogger(__name__)


class _Handler(socketserver.StreamRequestHandler):
    server: DaemonServer

    def handle(self) -> None:
        started = time.perf_counter()
        command = "?"
        code = 0
        try:
            line = self.rfile.readline(wire.MAX_MESSAGE_BYTES)
            if not line:
                return
            request = wire.decode(line)
            command = str(request.get("command", "?"))
            answer: dict[str, Any] = {"result": self.server.service.handle(request)}
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
        try:
            self.wfile.write(wire.encode(answer))
        except OSError:
            log.info("%s: the shim went away before the answer", command)


class DaemonServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, socket_path: str, service: IPAMService) -> None:
        path = Path(socket_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise WhereaboutsError(f"--socket {socket_path} exists and is not a socket")
            path.unlink()
        self.service = service
        old_umask = os.umask(0o177)  # the socket is born 0600
        try:
            super().__init__(socket_path, _Handler)
        finally:
            os.umask(old_umask)
        os.chmod(socket_path, 0o600)
