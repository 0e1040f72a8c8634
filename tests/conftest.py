"""Fixtures shared by every test (the real local control plane) and honest markers.

Markers are given by what a test uses, so ``pytest -m "not kube and not
netns"`` is the fast pure suite it looks like:

* ``kube``: every test that uses the ``control_plane`` fixture (directly or
  through another fixture) and every module that starts a control plane
  itself (it declares ``pytestmark``). A test without the marker that tries
  to start one fails, naming the marker it lacks.
* ``netns``: the folders whose tests make network namespaces (``netns/``,
  ``multus/``, ``cluster/``) and the tests that declare it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from whereabouts_py_dev.controlplane import ControlPlane, running

NETNS_FOLDERS = {"netns", "multus", "cluster"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "control_plane" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kube)
        folder = Path(str(item.fspath)).parent.name
        if folder in NETNS_FOLDERS:
            item.add_marker(pytest.mark.netns)


@pytest.fixture(autouse=True)
def _unmarked_tests_start_no_control_plane(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if request.node.get_closest_marker("kube") is not None:
        return

    def refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
        raise AssertionError(
            f"{request.node.nodeid} starts a control plane but is not marked 'kube': use the "
            "control_plane fixture or declare pytestmark = pytest.mark.kube"
        )

    monkeypatch.setattr(ControlPlane, "start", refuse)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """kube-apiserver + etcd on loopback, shared by the whole session."""
    with running(die_with_parent=True) as plane:
        yield plane


@pytest.fixture
def namespace(control_plane: ControlPlane) -> str:
    """A fresh namespace per test (namespaces never finish terminating here)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    control_plane.kubectl("create", "namespace", name)
    return name
