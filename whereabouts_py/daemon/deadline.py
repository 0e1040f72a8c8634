"""How long the work for one request may go on: until its client is gone or its time is up.

The shim gives up on an answer after its timeout (25 s for ADD by default) and
closes the connection; the runtime then retries with a new call. Work done
after that is wasted at best, and work that keeps going piles up behind every
retry. So the thread serving a request carries a *scope*: the connection it
answers and a deadline. Loops whose length depends on the cluster's state (the
blocks a large range tries, one after the other) call ``checkpoint()`` before
each step, which raises ``RequestAbandonedError`` (code 11) once the client has
hung up or the deadline has passed.

Checkpoints sit only between whole steps, never inside one: an operation
handed to a pool's writer always completes, so abandoning a request never
leaves half a change behind. Threads without a scope (a pool's batch writer,
the reconciler) are never interrupted.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from whereabouts_py.errors import TryAgainError

# A little longer than the shim waits for any verb by default (25 s), so that a
# shim with the default timeout gives up first; a client that stays connected
# but frozen cannot hold a worker longer than this.
REQUEST_BUDGET_S = 30.0


class RequestAbandonedError(TryAgainError):
    """The request's client is gone or its time is up: its work stops here."""


@dataclass
class Scope:
    """The request a thread is serving: its connection (if any) and its deadline."""

    deadline: float
    connection: socket.socket | None = None
    steps: int = 0  # checkpoints passed, for tests and logs

    def client_gone(self) -> bool:
        """True once the peer has closed the connection (or it broke).

        A peer that only shut down its sending side still waits for the answer
        (POLLIN at end of stream, no POLLHUP), so it is not gone.
        """
        if self.connection is None:
            return False
        poller = select.poll()
        try:
            poller.register(self.connection.fileno(), select.POLLIN)
            events = poller.poll(0)
        except (OSError, ValueError):  # closed under us
            return True
        return any(mask & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, mask in events)


_local = threading.local()


def current() -> Scope | None:
    """The scope of the request this thread serves, if any."""
    scope: Scope | None = getattr(_local, "scope", None)
    return scope


@contextlib.contextmanager
def serving(
    connection: socket.socket | None = None, budget_s: float = REQUEST_BUDGET_S
) -> Iterator[Scope]:
    """Serve one request in this thread, bounded by ``connection`` and ``budget_s``."""
    previous = current()
    scope = Scope(time.monotonic() + budget_s, connection)
    _local.scope = scope
    try:
        yield scope
    finally:
        _local.scope = previous


def checkpoint(doing: str) -> None:
    """Raise RequestAbandonedError if this thread's request should stop before ``doing``."""
    scope = current()
    if scope is None:
        return
    scope.steps += 1
    if time.monotonic() > scope.deadline:
        raise RequestAbandonedError(
            f"gave up before {doing}: the request ran out of time",
            "the daemon stops work nobody waits for; the runtime retries",
        )
    if scope.client_gone():
        raise RequestAbandonedError(
            f"gave up before {doing}: the client hung up",
            "the daemon stops work nobody waits for; the runtime retries",
        )
