"""``python -m whereabouts_py.cni``: run the CNI shim.

The executable's file name is ``__main__.py`` here, so the plugin type the
shim answers to comes from ``WHEREABOUTS_PY_CNI_TYPE`` (default "whereabouts").
"""

import os

from whereabouts_py.cni.shim import run

run(plugin_type=os.environ.get("WHEREABOUTS_PY_CNI_TYPE") or "whereabouts")
