"""``devcluster up --nodes N``: the count is checked before anything starts."""

from __future__ import annotations

import pytest

from whereabouts_py_dev.cli import build_parser
from whereabouts_py_dev.cluster.lifecycle import MAX_NODES, node_names
from whereabouts_py_dev.netns import LabError


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("0", "--nodes must be at least 1, not 0"),
        ("two", "--nodes wants a whole number, not 'two'"),
    ],
)
def test_a_bad_node_count_is_refused_naming_it(
    value: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["devcluster", "up", "--nodes", value])
    assert exited.value.code == 2
    assert said in capsys.readouterr().err


def test_without_nodes_up_stays_the_control_plane_only() -> None:
    assert build_parser().parse_args(["devcluster", "up"]).nodes is None
    assert build_parser().parse_args(["devcluster", "up", "--nodes", "2"]).nodes == 2


def test_nodes_are_named_by_letter_up_to_the_limit() -> None:
    assert node_names(2) == ["node-a", "node-b"]
    assert node_names(MAX_NODES)[-1] == "node-z"
    with pytest.raises(LabError, match=f"between 1 and {MAX_NODES}, not {MAX_NODES + 1}"):
        node_names(MAX_NODES + 1)
