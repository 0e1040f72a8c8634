"""The README's first command keeps working: the demo runs end to end."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

# The demo starts a control plane of its own.
pytestmark = pytest.mark.kube


def test_demo_hands_out_distinct_addresses_from_two_nodes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "whereabouts_py_dev", "demo", "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assigned = re.findall(r"(node-[ab])  default/(\S+)\s+-> (\S+)", result.stdout)
    assert [pod for _node, pod, _address in assigned] == ["web-0", "web-1", "web-2", "db-0"]
    # .0-.15 are excluded and .1 is the gateway: the first address is .16.
    assert [address for *_rest, address in assigned] == [
        "192.168.2.16/24",
        "192.168.2.17/24",
        "192.168.2.18/24",
        "192.168.2.19/24",
    ]
    assert "192.168.2.0-24" in result.stdout
    # The plugin's pool summary: 4 of the /24's 254 usable addresses are held.
    assert re.search(r"192\.168\.2\.0-24\s+192\.168\.2\.0/24\s+4\s+250\s+1\.6%", result.stdout)
