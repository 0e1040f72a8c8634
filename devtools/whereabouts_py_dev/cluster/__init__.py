"""A real local cluster: the control plane, kube-controller-manager, kube-scheduler and N nodes.

Each node is a kubelet with its own containerd and runc, in a network
namespace of its own with ``eth1`` on one shared layer-2 segment with a
router, and in a mount namespace of its own; Multus (the pinned thin plugin)
is every node's CNI. The modules, one concern each:

``builds``       kubelet, kube-controller-manager, kube-scheduler (built once, cached)
``images``       the pause and lab-tools images as OCI archives; ``import_image``
``containerd``   a node's containerd configuration
``kubelet``      a node's kubelet configuration
``cni``          a node's CNI: Multus with a bridge default network
``network``      segment, router and node network namespaces
``node``         a node's mount namespace and processes
``cgroups``      a node's cgroup root, made and removed
``controllers``  kube-controller-manager and kube-scheduler, identities
``relay``        the apiserver relay as its own process
``lifecycle``    ``Cluster.up`` / ``Cluster.down``
"""

from whereabouts_py_dev.cluster.images import import_image
from whereabouts_py_dev.cluster.lifecycle import Cluster, running

__all__ = ["Cluster", "import_image", "running"]
