"""An ADD that fails after its pool write leaves no entry behind.

The pool entry is written before the reservation; when the reservation step
fails (e.g. the API answers 503), the entry is given back at once, so "all or
nothing" holds and the runtime's DEL has nothing to find, also in a large range
stored in blocks.
"""

from __future__ import annotations

from typing import Any

import pytest

from whereabouts_py.daemon.service import IPAMService
from whereabouts_py.errors import ApiUnavailableError, TryAgainError
from whereabouts_py.store.kube import KubeStore, connect
from whereabouts_py_dev.controlplane import ControlPlane


def request(command: str, cidr: str) -> dict[str, Any]:
    return {
        "command": command,
        "containerID": "sandbox-1",
        "ifname": "net1",
        "netns": "",
        "args": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=u1",
        "config": {
            "cniVersion": "1.0.0",
            "name": "big",
            "type": "macvlan",
            "ipam": {"type": "whereabouts", "range": cidr},
        },
    }


def held_entries(store: KubeStore) -> dict[str, dict[int, Any]]:
    return {p.name: dict(p.allocations) for p in store.list_pools() if p.allocations}


@pytest.mark.parametrize("cidr", ["10.78.0.0/24", "10.79.0.0/22"])
def test_failed_add_then_del_leaves_no_entry(
    control_plane: ControlPlane, namespace: str, cidr: str
) -> None:
    store = KubeStore(connect(str(control_plane.kubeconfig)), namespace)
    service = IPAMService(store, "node-a", flat_file_reader=lambda _path: {})
    real_create = store.create_reservation
    calls = {"n": 0}

    def flaky_create(name: str, holder: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ApiUnavailableError("creating OverlappingRangeIPReservation: API answered 503")
        return real_create(name, holder)

    store.create_reservation = flaky_create  # type: ignore[method-assign]
    with pytest.raises(TryAgainError):
        service.handle(request("ADD", cidr))
    after_add = held_entries(store)
    # The runtime cleans up the failed ADD with a DEL of the same container.
    service.handle(request("DEL", cidr))
    after_del = held_entries(store)
    assert after_del == {}, f"after failed ADD: {after_add}; after its DEL: {after_del}"
    assert after_add == {}, f"failed ADD was not rolled back: {after_add}"
