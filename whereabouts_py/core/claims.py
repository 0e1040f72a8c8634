"""Persistent addresses: which IPAMClaim an attachment's addresses belong to.

KubeVirt creates one IPAMClaim (``ipamclaims.k8s.cni.cncf.io``, v1alpha1) per
VM interface on a network whose configuration opts in with
``"allowPersistentIPs": true``, and names it in that network's element of the
pod's ``k8s.v1.cni.cncf.io/networks`` annotation as
``"ipam-claim-reference": "<claim name>"``. The claim lives in the pod's
namespace; the reference is a bare name.

An allocation recorded with ``ipam_claim`` (``ipamclaimref``,
``"namespace/name"``) belongs to that claim, not to the pod: every pod that
references the claim gets the same address, a DEL does not free it, and only
the claim's deletion does. Pure functions; nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from whereabouts_py.cni.names import is_object_name
from whereabouts_py.errors import ConfigError, InvalidEnvironmentError

NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"
CLAIM_REFERENCE_KEY = "ipam-claim-reference"
PERSISTENT_IPS_KEY = "allowPersistentIPs"


def allows_persistent_ips(netconf: Mapping[str, Any]) -> bool:
    """Whether the network configuration opts in (top-level ``allowPersistentIPs``)."""
    value = netconf.get(PERSISTENT_IPS_KEY)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(
            PERSISTENT_IPS_KEY,
            value,
            f"must be a JSON boolean (true or false), not {type(value).__name__}",
        )
    return value


def claim_ref(namespace: str, name: str) -> str:
    """How an allocation records its claim: ``namespace/name``."""
    return f"{namespace}/{name}"


def is_claimed(ipam_claim: str | None) -> bool:
    """Whether an allocation's ``ipamclaimref`` names a claim (``namespace/name``)."""
    if not ipam_claim:
        return False
    namespace, slash, name = ipam_claim.partition("/")
    return bool(slash and namespace and name)


@dataclass(frozen=True)
class NetworkSelection:
    """One element of the networks annotation, as Multus reads it."""

    name: str  # the NetworkAttachmentDefinition's name
    namespace: str | None
    interface: str  # explicit, or the name Multus gives it: net<position>
    claim: str | None  # the ipam-claim-reference, when present


def _selections(text: str) -> list[NetworkSelection]:
    """The annotation's elements; the short ``ns/name@if, ...`` form carries no claims."""
    stripped = text.strip()
    if not stripped.startswith("["):
        return []
    try:
        elements = json.loads(stripped)
    except ValueError:
        raise InvalidEnvironmentError(
            f"the pod's {NETWORKS_ANNOTATION} annotation is not valid JSON",
            f"annotation value {stripped[:120]!r}",
        ) from None
    if not isinstance(elements, list):
        return []
    selections: list[NetworkSelection] = []
    for position, element in enumerate(elements, start=1):
        if not isinstance(element, dict):
            continue
        name = element.get("name")
        namespace = element.get("namespace")
        interface = element.get("interface")
        claim = element.get(CLAIM_REFERENCE_KEY)
        selections.append(
            NetworkSelection(
                name=name if isinstance(name, str) else "",
                namespace=namespace if isinstance(namespace, str) and namespace else None,
                interface=interface
                if isinstance(interface, str) and interface
                else f"net{position}",
                claim=claim if isinstance(claim, str) else None,
            )
        )
    return selections


def _nad_name(selection: NetworkSelection) -> tuple[str | None, str]:
    """A selection's NAD as ``(namespace or None, name)``; ``ns/name`` spelling accepted."""
    namespace, slash, name = selection.name.partition("/")
    if slash:
        return namespace, name
    return selection.namespace, selection.name


def claim_reference(
    annotations: Mapping[str, str],
    ifname: str,
    network_name: str,
) -> str | None:
    """The claim name the pod's networks annotation gives this attachment, or None.

    The element is found as Multus attaches it: by interface name (an element
    without one is ``net<position>``). When more than one element would match,
    the one whose NAD name equals the network's name is taken. A reference
    that is not a plain object name (e.g. ``other/claim``, a claim of another
    namespace) is refused: claims are used from the pod's namespace only.
    """
    text = annotations.get(NETWORKS_ANNOTATION)
    if not text:
        return None
    matching = [s for s in _selections(text) if s.interface == ifname]
    if len(matching) > 1:
        matching = [s for s in matching if _nad_name(s)[1] == network_name]
    if len(matching) != 1 or matching[0].claim is None:
        return None
    claim = matching[0].claim
    if not is_object_name(claim):
        raise ConfigError(
            f"{NETWORKS_ANNOTATION}[{CLAIM_REFERENCE_KEY}]",
            claim,
            "must be the name of an IPAMClaim in the pod's namespace",
        )
    return claim


@dataclass(frozen=True)
class ClaimState:
    """One IPAMClaim as the store reads it.

    ``ips`` is ``status.ips``: CIDR strings (``10.1.0.5/24``, ``fd00::5/64``),
    the form OVN-Kubernetes writes too. ``owner_pod`` is
    ``status.ownerPod.name``.
    """

    namespace: str
    name: str
    network: str = ""
    interface: str = ""
    ips: tuple[str, ...] = ()
    owner_pod: str = ""
    resource_version: str | None = None
    uid: str = ""
    conditions: tuple[Mapping[str, Any], ...] = ()

    @property
    def ref(self) -> str:
        return claim_ref(self.namespace, self.name)


ALLOCATED_CONDITION = "IPsAllocated"


def allocated_conditions(existing: tuple[Mapping[str, Any], ...], now: str) -> list[dict[str, Any]]:
    """``status.conditions`` after an allocation: ``IPsAllocated`` set True
    (reason ``SuccessfulAllocation``, as OVN-Kubernetes sets it), every other
    condition kept as it is; the transition time only moves when it changes."""
    kept = [dict(c) for c in existing if c.get("type") != ALLOCATED_CONDITION]
    previous = next((c for c in existing if c.get("type") == ALLOCATED_CONDITION), None)
    since = now
    if previous is not None and previous.get("status") == "True":
        since = str(previous.get("lastTransitionTime") or now)
    return [
        *kept,
        {
            "type": ALLOCATED_CONDITION,
            "status": "True",
            "reason": "SuccessfulAllocation",
            "message": "addresses allocated by whereabouts-py",
            "lastTransitionTime": since,
        },
    ]
