"""``python -m whereabouts_py_dev``: the same as the ``whereabouts-py-dev`` command."""

import sys

from whereabouts_py_dev.cli import main

sys.exit(main())
