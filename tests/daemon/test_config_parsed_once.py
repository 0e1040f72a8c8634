"""The daemon parses a network's IPAM section once, not at every request."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from whereabouts_py.daemon.service import IPAMService
from whereabouts_py.errors import ConfigError
from whereabouts_py.store.memory import MemoryStore


def _network(**ipam: Any) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "whereabouts", **ipam}}


def test_the_same_section_is_parsed_once_and_a_different_one_again() -> None:
    service = IPAMService(MemoryStore("pools"), "node-a", flat_file_reader=lambda _path: {})
    first = service.ipam_config(_network(range="10.1.0.0/24", exclude=["10.1.0.8/29"]))
    # As a new request decodes it: an equal section, keys in another order.
    again = service.ipam_config(_network(exclude=["10.1.0.8/29"], range="10.1.0.0/24"))
    assert again is first
    other = service.ipam_config(_network(range="10.1.0.0/24", exclude=["10.1.0.16/29"]))
    assert other is not first
    assert other.ranges[0].excluded != first.ranges[0].excluded


def test_the_flat_file_is_part_of_what_was_parsed() -> None:
    flat: dict[str, Any] = {"range": "10.2.0.0/24"}
    service = IPAMService(
        MemoryStore("pools"), "node-a", flat_file_reader=lambda _path: copy.deepcopy(flat)
    )
    before = service.ipam_config(_network())
    flat["range"] = "10.3.0.0/24"
    after = service.ipam_config(_network())
    assert (str(before.ranges[0].network), str(after.ranges[0].network)) == (
        "10.2.0.0/24",
        "10.3.0.0/24",
    )


def test_an_invalid_section_is_refused_every_time() -> None:
    service = IPAMService(MemoryStore("pools"), "node-a", flat_file_reader=lambda _path: {})
    for _ in range(2):
        with pytest.raises(ConfigError, match="range"):
            service.ipam_config(_network(range="10.1.0.0/33"))
