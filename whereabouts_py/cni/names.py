"""Kubernetes' naming rules, for every name we build from input or send to the API.

Standard library only: the shim checks the pod reference in ``CNI_ARGS`` with
them before it forwards a request; the configuration parser checks every
object name it derives (IPPool, OverlappingRangeIPReservation) and the store
refuses to send a request for a name that breaks them, whoever built it.

* An object name (IPPool, reservation, Lease, Pod) is a DNS-1123 subdomain:
  at most 253 characters of lower case letters, digits, ``-`` and ``.``,
  starting and ending with a letter or digit, every ``.``-separated part too.
* A namespace is a DNS-1123 label: at most 63 characters of lower case
  letters, digits and ``-``, starting and ending with a letter or digit.
"""

from __future__ import annotations

SUBDOMAIN_MAX = 253
LABEL_MAX = 63

# Checked by hand, not with re: the shim checks names at every CNI call, and
# importing re costs more than the check.
_ENDS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_INNER = _ENDS | {"-"}


def _is_label(part: str) -> bool:
    """``[a-z0-9]([-a-z0-9]*[a-z0-9])?``"""
    return bool(part) and part[0] in _ENDS and part[-1] in _ENDS and all(c in _INNER for c in part)


SUBDOMAIN_RULE = (
    f"at most {SUBDOMAIN_MAX} characters of lower case letters, digits, '-' and '.', "
    "starting and ending with a letter or digit (a DNS-1123 subdomain)"
)
LABEL_RULE = (
    f"at most {LABEL_MAX} characters of lower case letters, digits and '-', "
    "starting and ending with a letter or digit (a DNS-1123 label)"
)


def is_object_name(name: object) -> bool:
    """True if ``name`` may name a Kubernetes object (a DNS-1123 subdomain)."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= SUBDOMAIN_MAX
        and all(_is_label(part) for part in name.split("."))
    )


def is_namespace_name(name: object) -> bool:
    """True if ``name`` may name a namespace (a DNS-1123 label)."""
    return isinstance(name, str) and 0 < len(name) <= LABEL_MAX and _is_label(name)
