"""Fixtures of the reconciler tests (the harness itself is in ``harness.py``)."""

from __future__ import annotations

import pytest

from whereabouts_py_dev.controlplane import ControlPlane

from .harness import Cluster, new_namespace


@pytest.fixture(scope="module")
def module_namespace(control_plane: ControlPlane) -> str:
    """One namespace for the pools (and pods) of a module that shares one reconciler."""
    return new_namespace(control_plane)


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane, module_namespace: str) -> Cluster:
    found = Cluster(control_plane, module_namespace)
    # kopf reports its pod watch as established with the first pod it sees.
    found.create_pod("sentinel")
    return found
