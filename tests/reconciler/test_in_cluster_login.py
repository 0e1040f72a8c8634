"""The reconciler in a pod dials the Service address the kubelet gives it, not a DNS name.

kopf's in-cluster login names https://kubernetes.default.svc, which only
resolves where cluster DNS runs; the daemon (client-go's rule) uses
KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT, and so must the reconciler.
"""

from __future__ import annotations

import kopf

from whereabouts_py.reconciler.operator import in_cluster_connection

KOPF_DEFAULT = kopf.ConnectionInfo(
    server="https://kubernetes.default.svc", token="t", ca_path="/ca.crt", default_namespace="ns"
)


def test_the_service_host_and_port_replace_the_dns_name() -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    info = in_cluster_connection(KOPF_DEFAULT, env)
    assert info is not None
    assert info.server == "https://10.96.0.1:443"
    # Everything else of the service-account login stays.
    assert (info.token, info.ca_path, info.default_namespace) == ("t", "/ca.crt", "ns")


def test_an_ipv6_service_host_is_bracketed() -> None:
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    info = in_cluster_connection(KOPF_DEFAULT, env)
    assert info is not None and info.server == "https://[fd00::1]:6443"


def test_without_the_variables_kopf_login_is_kept() -> None:
    assert in_cluster_connection(KOPF_DEFAULT, {}) == KOPF_DEFAULT
    assert in_cluster_connection(None, {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}) is None
