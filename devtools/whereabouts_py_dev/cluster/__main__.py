"""``python -m whereabouts_py_dev.cluster``: build (once) what real nodes need; print where."""

from whereabouts_py_dev.cluster.builds import ensure_node_binaries
from whereabouts_py_dev.cluster.images import node_images

print(ensure_node_binaries().directory)
for archive in node_images():
    print(archive)
