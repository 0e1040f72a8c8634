"""whereabouts-py: cluster-wide IPAM for Kubernetes secondary networks."""

__version__ = "0.1.0"
