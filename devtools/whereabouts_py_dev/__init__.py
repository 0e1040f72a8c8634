"""A real, local Kubernetes control plane for the demo and the tests.

kube-apiserver and etcd are built once from pinned Go modules (see
``binaries``) and started on loopback ports (see ``controlplane``).
"""
