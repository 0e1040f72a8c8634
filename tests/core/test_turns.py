"""The turn rule of a shared pool (core.turns)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from whereabouts_py.core import turns
from whereabouts_py.core.turns import OPEN, Turn, after_pass, after_write, parse


def test_encoding_round_trips_and_orders_the_ring() -> None:
    turn = Turn("node-b", 1234, ("node-a", "node-b", "node-c"), (("node-c", 99),))
    assert turn.encode() == "next=node-b;until=1234;ring=node-a,node-b,node-c;taken=node-c@99"
    assert parse(turn.encode()) == turn
    assert parse("next=x;until=7;ring=c,a,b,a") == Turn("x", 7, ("a", "b", "c"))


def test_missing_or_malformed_values_are_an_open_turn() -> None:
    for value in (None, "", "garbage", "next=x;until=soon;ring=a", "next=x;ring"):
        assert parse(value) == OPEN
    assert OPEN.may_write("anyone", 0)


def test_only_the_named_node_may_write_until_its_turn_lapses() -> None:
    turn = Turn("node-b", 1000, ("node-a", "node-b"))
    assert turn.may_write("node-b", 999)
    assert not turn.may_write("node-a", 999)
    assert turn.may_write("node-a", 1000)  # lapsed: node-b is presumed gone


def test_a_write_names_the_next_member_by_name_cyclically() -> None:
    ring = ("node-a", "node-b", "node-c")
    assert after_write(Turn("node-a", 50, ring), "node-a", 10).next == "node-b"
    assert after_write(Turn("node-c", 50, ring), "node-c", 10) == Turn(
        "node-a", 10 + turns.TURN_GRACE_MS, ring
    )


def test_a_newcomer_joins_by_writing_and_the_turn_goes_round() -> None:
    turn = after_write(OPEN, "node-b", 0)
    assert turn == Turn("node-b", turns.TURN_GRACE_MS, ("node-b",))  # alone: it keeps it
    assert not turn.may_write("node-a", 1)
    turn = after_write(turn, "node-b", 1, wanting={"node-a": 1})  # node-a asked meanwhile
    assert (turn.next, turn.ring) == ("node-a", ("node-a", "node-b"))
    assert turn.taken == (("node-a", 1),)
    # A request is taken once: node-a passes and leaves; its old request stays
    # in the Lease but does not bring it back. A new one does.
    left = after_pass(turn, "node-a", 2, wanting={"node-a": 1})
    assert left.ring == ("node-b",)
    back = after_write(left, "node-b", 3, wanting={"node-a": 3})
    assert back.ring == ("node-a", "node-b")
    assert parse(back.encode()) == back


def test_requests_for_a_turn_expire_and_round_trip() -> None:
    value = turns.encode_wants({"node-b": 1000, "node-a": 990})
    assert value == "node-a=990,node-b=1000"
    assert turns.wants(value, 1500) == {"node-a": 990, "node-b": 1000}
    assert turns.wants(value, 990 + turns.WANT_TTL_MS) == {"node-b": 1000}
    assert turns.wants("junk,=5,node-c=soon,node-d=7", 7) == {"node-d": 7}


def test_writing_after_a_lapsed_turn_drops_the_silent_node() -> None:
    turn = Turn("node-b", 100, ("node-a", "node-b", "node-c"))
    after = after_write(turn, "node-a", 200)
    assert after.ring == ("node-a", "node-c")
    assert after.next == "node-c"
    # Before it lapsed, an out-of-turn write (a newcomer) keeps everyone.
    assert after_write(turn, "node-d", 50).ring == ("node-a", "node-b", "node-c", "node-d")


def test_passing_leaves_the_ring_and_names_the_next() -> None:
    turn = Turn("node-b", 100, ("node-a", "node-b", "node-c"))
    after = after_pass(turn, "node-b", 20)
    assert after == Turn("node-c", 20 + turns.TURN_GRACE_MS, ("node-a", "node-c"))
    assert after_pass(Turn("node-a", 5, ("node-a",)), "node-a", 1) == OPEN


names = st.lists(st.sampled_from([f"node-{i}" for i in range(12)]), min_size=1, unique=True)


@given(names, st.data())
def test_the_named_node_is_always_a_member_other_than_the_writer(
    ring: list[str], data: st.DataObject
) -> None:
    writer = data.draw(st.sampled_from([*ring, "node-new"]))
    turn = after_write(Turn(ring[0], 10**12, tuple(sorted(ring))), writer, 0)
    assert writer in turn.ring
    assert turn.next in turn.ring
    assert turn.next != writer or turn.ring == (writer,)
    assert turn.next != ""  # someone always has the turn after a write
    passed = after_pass(turn, writer, 0)
    assert writer not in passed.ring
    assert passed.next == "" or passed.next in passed.ring


def test_the_ring_is_bounded() -> None:
    many = ",".join(f"n{i:03d}" for i in range(200))
    assert len(parse(f"next=;until=0;ring={many}").ring) == turns.MAX_RING


def test_each_node_asks_in_an_annotation_of_its_own_that_any_node_name_fits() -> None:
    long_name = "n" * 253
    keys = {turns.want_key(node) for node in ("node-a", "node-b", long_name)}
    assert len(keys) == 3
    for key in keys:
        prefix, _, name = key.partition("/")
        assert prefix == "whereabouts-py.io"
        assert len(name) <= 63
        assert name.startswith("want-")
    assert turns.want_key("node-a") == turns.want_key("node-a")


def test_requests_are_read_from_every_nodes_annotation_and_the_shared_one() -> None:
    notes = {
        turns.want_key("node-a"): "node-a=1000",
        turns.want_key("node-b"): "node-b=900",
        turns.WANT_ANNOTATION: "node-b=950,node-c=980",  # an earlier version's shared one
        "other.io/note": "node-d=1000",
    }
    assert turns.wants_in(notes, 1100) == {"node-a": 1000, "node-b": 950, "node-c": 980}
    assert turns.wants_in(notes, 950 + turns.WANT_TTL_MS) == {"node-a": 1000, "node-c": 980}


def test_an_ask_sets_its_own_request_and_removes_only_expired_ones() -> None:
    now = 10_000
    seen = {
        turns.want_key("node-b"): f"node-b={now - turns.WANT_TTL_MS}",  # expired
        turns.want_key("node-c"): f"node-c={now - 10}",  # live
        turns.want_key("node-a"): f"node-a={now - turns.WANT_TTL_MS}",  # its own: replaced
        turns.WANT_ANNOTATION: "node-e=1",  # an earlier version's: left to its writers
        "other.io/note": "x",
    }
    assert turns.ask("node-a", now, seen) == {
        turns.want_key("node-a"): f"node-a={now}",
        turns.want_key("node-b"): None,
    }
    assert turns.ask("node-a", now) == {turns.want_key("node-a"): f"node-a={now}"}
