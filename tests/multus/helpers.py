"""Helpers of the Multus lab tests: what the API and the netns say about the pods."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from typing import Any

from whereabouts_py_dev.controlplane import ControlPlane
from whereabouts_py_dev.lab import Lab, LabPod
from whereabouts_py_dev.runtime import Outcome


def netns_list() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def explain(lab: Lab, pod: LabPod, outcome: Outcome | None = None) -> str:
    """What to read when an attachment went wrong: Multus' answer and the node's logs."""
    parts = []
    if outcome is not None:
        parts.append(
            f"exit {outcome.returncode}\nstdout: {outcome.stdout}\nstderr: {outcome.stderr}"
        )
    multus_log = lab.nodes[pod.node].directory / "multus.log"
    if multus_log.exists():
        parts.append("multus.log:\n" + multus_log.read_text(errors="replace")[-3000:])
    parts.append("daemon log:\n" + lab.daemon_log(pod.node)[-3000:])
    return "\n".join(parts)


def allocations(plane: ControlPlane, namespace: str) -> dict[str, dict[str, Any]]:
    """Every IPPool entry of the namespace, keyed by the address it stands for."""
    listed = json.loads(plane.kubectl("get", "ippools", "-n", namespace, "-o", "json").stdout)
    found: dict[str, dict[str, Any]] = {}
    for item in listed["items"]:
        network = ipaddress.ip_network(item["spec"]["range"])
        for offset, entry in (item["spec"].get("allocations") or {}).items():
            found[str(network.network_address + int(offset))] = entry
    return found


def reservations(plane: ControlPlane, namespace: str) -> dict[str, dict[str, Any]]:
    return plane.specs("overlappingrangeipreservations", namespace)


def gateway_of(cidr: str) -> str:
    """The router's address on a network: its first host, with the prefix."""
    network = ipaddress.ip_network(cidr)
    return f"{network.network_address + 1}/{network.prefixlen}"
