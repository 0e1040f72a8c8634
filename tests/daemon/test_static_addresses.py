"""The IPAM key ``addresses`` adds its static entries after the allocated ones.

whereabouts appends every ``addresses`` entry to the ADD result (address and
gateway as written), after the addresses it allocated; NADs rely on it.
"""

from __future__ import annotations

from typing import Any

from whereabouts_py.daemon.service import IPAMService
from whereabouts_py.store.memory import MemoryStore


def add(service: IPAMService, ipam: dict[str, Any]) -> dict[str, Any]:
    return service.handle(
        {
            "command": "ADD",
            "containerID": "ctr-1",
            "ifname": "net1",
            "netns": "/var/run/netns/p",
            "args": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
            "config": {"cniVersion": "1.0.0", "name": "s", "type": "macvlan", "ipam": ipam},
        }
    )


def test_static_addresses_follow_the_allocated_ones() -> None:
    store = MemoryStore("pools")
    result = add(
        IPAMService(store, "node-a", coordination="never"),
        {
            "type": "whereabouts",
            "range": "10.78.0.0/29",
            "gateway": "10.78.0.6",
            "addresses": [
                {"address": "192.168.50.5/24", "gateway": "192.168.50.1"},
                {"address": "fd50::5/64"},
            ],
        },
    )
    assert result["ips"] == [
        {"address": "10.78.0.1/29", "gateway": "10.78.0.6"},
        {"address": "192.168.50.5/24", "gateway": "192.168.50.1"},
        {"address": "fd50::5/64"},
    ]
    # Static addresses are the NAD's own: nothing is allocated for them.
    (pool,) = store.list_pools()
    assert list(pool.allocations) == [1]


def test_without_addresses_only_the_allocated_ones() -> None:
    result = add(
        IPAMService(MemoryStore("pools"), "node-a", coordination="never"),
        {"type": "whereabouts", "range": "10.79.0.0/29"},
    )
    assert result["ips"] == [{"address": "10.79.0.1/29"}]


def test_static_addresses_are_given_in_standard_notation() -> None:
    result = add(
        IPAMService(MemoryStore("pools"), "node-a", coordination="never"),
        {
            "type": "whereabouts",
            "range": "10.80.0.0/29",
            "addresses": [{"address": "192.168.050.005/24"}, {"address": "FD50:0::5/64"}],
        },
    )
    assert result["ips"][1:] == [{"address": "192.168.50.5/24"}, {"address": "fd50::5/64"}]
