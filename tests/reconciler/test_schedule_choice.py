"""Which sweep schedule the reconciler follows: flag, flat file, default."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from whereabouts_py.reconciler.operator import sweep_schedule


def test_flag_wins_then_flat_file_cron_then_default(tmp_path: Path) -> None:
    flat = tmp_path / "whereabouts.conf"
    flat.write_text(json.dumps({"reconciler_cron_expression": "*/10 * * * *"}))
    assert sweep_schedule(45.0, str(flat)).describe() == "every 45s"
    from_file = sweep_schedule(None, str(flat))
    assert from_file.cron is not None
    assert from_file.describe() == "cron '*/10 * * * *'"
    assert 0 < from_file.seconds_to_next() <= 600
    empty = tmp_path / "empty.conf"
    empty.write_text("{}")
    assert sweep_schedule(None, str(empty)).describe() == "every 300s"


def test_malformed_cron_in_the_flat_file_is_a_clear_error(tmp_path: Path) -> None:
    flat = tmp_path / "whereabouts.conf"
    flat.write_text(json.dumps({"reconciler_cron_expression": "every now and then"}))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "whereabouts_py",
            "reconciler",
            "--configuration-path",
            str(flat),
            "--kubeconfig",
            str(tmp_path / "missing-kubeconfig"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "reconciler_cron_expression=every now and then" in result.stderr
    assert "Traceback" not in result.stderr
