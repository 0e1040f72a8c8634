"""Whose turn it is to write a shared IPPool: the rule, free of I/O.

When several nodes write one IPPool object (a range of up to 256 addresses
that every node uses), compare-and-swap alone lets them race: all but one
write per round is answered 409 and done again. Instead the nodes take turns,
and the turn travels *inside the pool object*: every write of a contended
pool also names the node that writes next, so handing over costs no request
of its own. The annotation holds three things:

* ``next``: the node whose turn it is ("" when anyone may write; a node alone
  in the ring names itself);
* ``until``: when that turn lapses (ms since the epoch), so that a node that
  died holding it stops nobody for long;
* ``ring``: the nodes that want to write, in name order; the turn goes round
  it. A member leaves by passing the turn on when it gets it with nothing to
  write;
* ``taken``: the requests for a turn (below) already taken into the ring, so
  that a request is taken once and nobody has to withdraw it.

A node that is not in the ring asks for a turn in the pool's coordination
Lease: an annotation of its own (``want-<digest of its name>``, holding node
and when it asked), set by a merge patch, so that nodes asking at the same
moment never conflict and nobody reads the Lease first; whoever writes the
pool next takes the request into the ring. (Daemons of earlier versions ask
in one shared ``want`` annotation by compare-and-swap; it is still read.)
Asking through another object matters: a node writing out of turn to join
would race with the ring, and while the ring goes round quickly it would lose
that race every time. When no ring is going (the turn is open or has
lapsed), a node just writes.

None of this decides correctness: every write is still a compare-and-swap on
the pool's resourceVersion. Turns only spare the lost races.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

TURN_ANNOTATION = "whereabouts-py.io/turn"
WANT_ANNOTATION = "whereabouts-py.io/want"
# A request for a turn is forgotten after this long (its node may be gone; one
# that still waits asks again).
WANT_TTL_MS = 5000
# How long the named node has to write before anyone may.
TURN_GRACE_MS = 2000
# At most this many nodes in a ring (more would make the annotation large;
# the others write out of turn, which compare-and-swap keeps safe).
MAX_RING = 64


@dataclass(frozen=True)
class Turn:
    next: str
    until_ms: int
    ring: tuple[str, ...]
    taken: tuple[tuple[str, int], ...] = ()  # requests taken: (node, when asked)

    def encode(self) -> str:
        taken = ",".join(f"{node}@{when}" for node, when in self.taken)
        return f"next={self.next};until={self.until_ms};ring={','.join(self.ring)};taken={taken}"

    def lapsed(self, now_ms: int) -> bool:
        return now_ms >= self.until_ms

    def may_write(self, node: str, now_ms: int) -> bool:
        """Whether ``node`` may write now without taking anyone's turn."""
        return self.next in ("", node) or self.lapsed(now_ms)


OPEN = Turn("", 0, ())


@functools.lru_cache(maxsize=256)
def parse(value: str | None) -> Turn:
    """The turn an annotation value states; OPEN for a missing or malformed one.

    Cached (a Turn is immutable): every writer of a pool reads the same value
    again at each event of its watch until the next write changes it."""
    if not value:
        return OPEN
    fields: dict[str, str] = {}
    for part in value.split(";"):
        key, sep, item = part.partition("=")
        if not sep:
            return OPEN
        fields[key] = item
    try:
        until = int(fields.get("until", ""))
    except ValueError:
        return OPEN
    ring = tuple(sorted({node for node in fields.get("ring", "").split(",") if node}))
    taken: dict[str, int] = {}
    for item in fields.get("taken", "").split(","):
        node, sep, when = item.partition("@")
        if sep and node and when.isdigit():
            taken[node] = int(when)
    return Turn(fields.get("next", ""), until, ring[:MAX_RING], _taken(taken))


def _taken(found: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(found.items()))[:MAX_RING]


def _after(node: str, ring: Iterable[str]) -> str:
    """The member after ``node`` in ``ring`` (cyclic, by name), or "" when none other."""
    others = sorted(member for member in set(ring) if member != node)
    if not others:
        return ""
    later = [member for member in others if member > node]
    return later[0] if later else others[0]


def _ring(members: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(members)))[:MAX_RING]


def _take(turn: Turn, wanting: Mapping[str, int], now_ms: int) -> tuple[set[str], dict[str, int]]:
    """The requests not taken yet, and the record of taken ones (live ones only)."""
    taken = {node: when for node, when in turn.taken if abs(now_ms - when) < WANT_TTL_MS}
    new = {node for node, when in wanting.items() if taken.get(node) != when}
    taken.update({node: wanting[node] for node in new})
    return new, taken


def after_write(
    turn: Turn,
    node: str,
    now_ms: int,
    *,
    wanting: Mapping[str, int] | None = None,
    grace_ms: int = TURN_GRACE_MS,
) -> Turn:
    """The turn to store with a write by ``node`` that wants to write again.

    ``node`` and the nodes whose requests (``wanting``: node -> when asked) are
    new join the ring. If it wrote after the named node's turn lapsed, that
    node is presumed gone and leaves it.
    """
    new, taken = _take(turn, wanting or {}, now_ms)
    members = set(turn.ring) | {node} | new
    if turn.next not in ("", node) and turn.lapsed(now_ms):
        members.discard(turn.next)
    ring = _ring(members)
    # Alone, it keeps the turn: others ask for one instead of racing it.
    following = _after(node, ring) or node
    return Turn(following, now_ms + grace_ms, ring, _taken(taken))


def after_pass(
    turn: Turn,
    node: str,
    now_ms: int,
    *,
    wanting: Mapping[str, int] | None = None,
    grace_ms: int = TURN_GRACE_MS,
) -> Turn:
    """The turn to store when ``node`` had nothing to write.

    It leaves the ring (it asks again when it has work: staying would cost a
    write each time the turn came round to it idle); nodes with new requests
    join it.
    """
    new, taken = _take(turn, wanting or {}, now_ms)
    members = set(turn.ring) | new
    following = _after(node, members)
    ring = _ring(member for member in members if member != node)
    if not ring:
        return OPEN
    return Turn(following, now_ms + grace_ms if following else 0, ring, _taken(taken))


def wants(value: str | None, now_ms: int) -> dict[str, int]:
    """The live requests for a turn in a ``want`` annotation: node -> when (ms)."""
    found: dict[str, int] = {}
    for part in (value or "").split(","):
        node, sep, when = part.partition("=")
        if not sep or not node or not when.isdigit():
            continue
        if abs(now_ms - int(when)) < WANT_TTL_MS:
            found[node] = int(when)
    return found


def encode_wants(found: Mapping[str, int]) -> str:
    return ",".join(f"{node}={when}" for node, when in sorted(found.items())[:MAX_RING])


def want_key(node: str) -> str:
    """The Lease annotation in which ``node`` asks for a turn: its own, so that asks
    never conflict. A digest, since a node name may be longer than an annotation's
    name may be (63 characters)."""
    digest = hashlib.sha256(node.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{WANT_ANNOTATION}-{digest}"


def _is_want_key(key: str) -> bool:
    return key == WANT_ANNOTATION or key.startswith(f"{WANT_ANNOTATION}-")


def wants_in(notes: Mapping[str, str], now_ms: int) -> dict[str, int]:
    """The live requests for a turn in a Lease's annotations: node -> when (ms).

    Each node's own annotation, and the shared one of earlier versions; the
    latest request of a node counts.
    """
    found: dict[str, int] = {}
    for key, value in notes.items():
        if _is_want_key(key):
            for node, when in wants(value, now_ms).items():
                found[node] = max(when, found.get(node, when))
    return found


def ask(node: str, now_ms: int, notes: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """The annotations to patch for ``node`` to ask for a turn now.

    Requests in ``notes`` (the Lease as last seen) that have expired are
    removed in the same patch (None), so that the Lease does not keep one
    annotation per node that ever asked. Removing one that its node renewed
    meanwhile costs that node at most a turn's wait: it then writes out of
    turn, and compare-and-swap keeps that safe.
    """
    mine = want_key(node)
    patch: dict[str, str | None] = {
        key: None
        for key, value in (notes or {}).items()
        if key not in (mine, WANT_ANNOTATION) and _is_want_key(key) and not wants(value, now_ms)
    }
    patch[mine] = f"{node}={now_ms}"
    return patch
