"""A small seeded fuzzing run of the real shim and daemon (the full run: tests/fuzz/harness.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.fuzz.harness import fuzz, summary
from whereabouts_py_dev.controlplane import ControlPlane

pytestmark = pytest.mark.kube

CASES = 250


def test_seeded_fuzzing_breaks_no_rule(control_plane: ControlPlane) -> None:
    directory = Path("/tmp") / f"wpy-fuzz-{os.getpid()}"  # unix socket paths stay short
    directory.mkdir()
    try:
        report = fuzz(control_plane, directory, cases=CASES, seed=20261129, workers=3)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    text = summary(report, 0.0, 20261129)
    assert report.cases == CASES, text
    assert report.failures == [], text
    assert (report.tracebacks, report.internal_errors, report.leftovers) == (0, 0, 0), text
    # The run exercised both sides: allocations that succeeded and many kinds of refusal.
    assert report.outcomes["ADD ok"] >= 20, text
    codes = {label.split()[-1] for label in report.outcomes if "code" in label}
    assert {"4", "6", "7"} <= codes, text
    assert not os.path.exists("/var/run/netns/wpy-fuzz-missing")
