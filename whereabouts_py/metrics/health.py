"""The HTTP endpoint of a process: ``/metrics``, ``/healthz`` and ``/readyz``.

``/healthz`` answers whether the process should be restarted: each liveness
check names a part that must keep moving (the daemon's socket loop, the
reconciler's operator loop). ``/readyz`` adds the readiness checks (the
Kubernetes API can be reached). Both answer 200 with one ``[+]name ok`` line
per check, or 503 with ``[-]name failed: reason`` for those that failed, as
the Kubernetes API server's own endpoints do; ``?verbose`` is accepted and
changes nothing.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from whereabouts_py.errors import WhereaboutsError, describe

log = logging.getLogger(__name__)

# None when the part is healthy, else why not (one line, shown to whoever asks).
Check = Callable[[], str | None]


class Heartbeat:
    """When a loop last went round; ``stalled`` once it has not for ``limit_s``."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self._last = time.monotonic()  # a grace of limit_s for the loop to start

    def beat(self) -> None:
        self._last = time.monotonic()

    def age(self) -> float:
        return time.monotonic() - self._last

    def check(self) -> str | None:
        age = self.age()
        return (
            f"no progress for {age:.1f}s (limit {self.limit_s:g}s)" if age > self.limit_s else None
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *, ipv6: bool
    ) -> None:
        if ipv6:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


def succeeds(action: Callable[[], object]) -> Check:
    """A check that passes when ``action`` (e.g. asking the API server its version) does."""

    def check() -> str | None:
        try:
            action()
        except WhereaboutsError as error:
            return describe(error)
        return None

    return check


def _run(checks: Mapping[str, Check]) -> tuple[bool, list[str]]:
    healthy = True
    lines = []
    for name, check in checks.items():
        try:
            problem = check()
        except Exception as error:  # a check that breaks is a failed check, never a 500
            problem = f"{type(error).__name__}: {error}"
        if problem is None:
            lines.append(f"[+]{name} ok")
        else:
            healthy = False
            lines.append(f"[-]{name} failed: {problem}")
    return healthy, lines


class HealthServer:
    """Serves the three endpoints from a daemon thread until ``close``."""

    def __init__(
        self,
        address: str,
        *,
        live: Mapping[str, Check] | None = None,
        ready: Mapping[str, Check] | None = None,
    ) -> None:
        host, _, port = address.rpartition(":")
        self.live = dict(live or {})
        self.ready = {**self.live, **(ready or {})}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                    self._answer(200, encoder(REGISTRY), content_type)
                elif path in ("/healthz", "/livez"):
                    self._checks("healthz", server.live)
                elif path == "/readyz":
                    self._checks("readyz", server.ready)
                else:
                    self._answer(404, b"not found: /metrics, /healthz or /readyz\n")

            def _checks(self, name: str, checks: Mapping[str, Check]) -> None:
                healthy, lines = _run(checks)
                verdict = f"{name} check passed" if healthy else f"{name} check failed"
                body = "\n".join([*lines, verdict]) + "\n"
                if not healthy:
                    log.warning("%s", body.strip().replace("\n", "; "))
                self._answer(200 if healthy else 503, body.encode())

            def _answer(
                self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8"
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # probes every few seconds would flood the log

        host = host.strip("[]") or "0.0.0.0"
        self._http = _Server((host, int(port)), Handler, ipv6=":" in host)
        self.port = self._http.server_address[1]
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="metrics-http", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
