"""The lab demo runs end to end and says what it showed (so its narration cannot rot)."""

from __future__ import annotations

import pytest

from whereabouts_py_dev.lab_demo import run_lab_demo

from .helpers import netns_list

pytestmark = [pytest.mark.kube, pytest.mark.netns]


def test_lab_demo(capsys: pytest.CaptureFixture[str], multus_binary: object) -> None:
    before = set(netns_list())
    assert run_lab_demo() == 0
    shown = capsys.readouterr().out
    for pod, node in (("web-0", "node-a"), ("web-1", "node-b")):
        assert f"{node}  default/{pod}" in shown
    assert "default/web-0 (node-a) -> 10.60.0.11: reply" in shown
    assert "default/web-0 (node-a) -> fd60::1: reply" in shown
    assert "NO REPLY" not in shown
    assert "the same address on both nodes, on one segment: a duplicate" in shown
    assert "network namespaces left: none" in shown
    assert set(netns_list()) <= before
