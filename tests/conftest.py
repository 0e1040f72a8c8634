"""Fixtures shared by every test: the real local control plane."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from whereabouts_py_dev.controlplane import ControlPlane, running


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
