"""Pods of the lab: the Pod object in the API, its sandbox netns, and looking inside it."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from whereabouts_py_dev.netns import LabError, ip

NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"
NETWORK_STATUS_ANNOTATION = "k8s.v1.cni.cncf.io/network-status"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


@dataclass(frozen=True)
class LabPod:
    """A Pod object in the API and the network namespace standing for its sandbox."""

    namespace: str
    name: str
    uid: str
    node: str
    netns: str
    sandbox: str

    @property
    def netns_path(self) -> str:
        return f"/var/run/netns/{self.netns}"

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def pod_object(
    namespace: str, name: str, node: str, networks: Sequence[Mapping[str, Any]] | str = ()
) -> dict[str, Any]:
    """A Pod bound to ``node`` with the Multus networks annotation (a list or its JSON)."""
    annotation = networks if isinstance(networks, str) else json.dumps(list(networks))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {NETWORKS_ANNOTATION: annotation} if annotation else {},
        },
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": PAUSE_IMAGE}]},
    }


def network_status(pod_json: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The pod's ``k8s.v1.cni.cncf.io/network-status`` as Multus wrote it ([] if none)."""
    text = pod_json["metadata"].get("annotations", {}).get(NETWORK_STATUS_ANNOTATION)
    status: list[dict[str, Any]] = json.loads(text) if text else []
    return status


def addresses(netns: str, ifname: str) -> list[str]:
    """Global addresses (``ip/prefix``) on ``ifname`` inside ``netns``; [] without it."""
    done = subprocess.run(
        ["ip", "-j", "-n", netns, "addr", "show", "dev", ifname],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip():
        return []
    return [
        f"{info['local']}/{info['prefixlen']}"
        for link in json.loads(done.stdout)
        for info in link.get("addr_info", [])
        if info.get("scope") == "global"
    ]


def wait_addresses_usable(pod: LabPod, ifname: str = "net1", timeout_s: float = 10.0) -> None:
    """Wait until IPv6 duplicate address detection has passed on the pod's interface.

    The plugins return before DAD ends (about a second); a tentative address
    cannot send yet. A failed DAD means another host holds the address.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        shown = ip("-j", "-n", pod.netns, "addr", "show", "dev", ifname).strip()
        infos = [info for link in json.loads(shown or "[]") for info in link.get("addr_info", [])]
        failed = [info["local"] for info in infos if info.get("dadfailed")]
        if failed:
            raise LabError(
                f"duplicate address detection failed for {', '.join(failed)} on {ifname} "
                f"of pod {pod.ref}: another host on the segment holds it"
            )
        if not any(info.get("tentative") for info in infos):
            return
        if time.monotonic() > deadline:
            raise LabError(f"addresses on {ifname} of pod {pod.ref} still tentative: {infos}")
        time.sleep(0.05)
