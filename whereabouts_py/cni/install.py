"""Install the CNI plugin executable that runs the shim with this Python interpreter.

The executable is a tiny script whose shebang starts this interpreter in
isolated mode without ``site`` (``-IS``: no site-packages scan, no PYTHON*
variables, no script directory on ``sys.path``), which keeps each CNI call's
start-up short; it puts the folder holding ``whereabouts_py`` on ``sys.path``
itself. Linux passes everything after the interpreter in a shebang as one
argument, hence the flags in one word.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import whereabouts_py

_SHEBANG_MAX = 255  # Linux reads at most 256 bytes of a "#!" line, newline included

_SCRIPT = """\
#!{python} -IS
# whereabouts-py CNI IPAM plugin, installed by `whereabouts-py install-cni`.
import sys
sys.path.insert(0, {package_parent!r})
from whereabouts_py.cni.shim import main
raise SystemExit(main())
"""


def install_cni(bin_dir: Path, name: str = "whereabouts") -> Path:
    """Write the executable ``bin_dir/name`` atomically (mode 0755) and return its path."""
    python = sys.executable
    if not python or any(char.isspace() for char in python):
        raise ValueError(f"cannot use {python!r} in a #! line: it is empty or has whitespace")
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"invalid plugin file name {name!r}")
    package_parent = str(Path(whereabouts_py.__file__).resolve().parent.parent)
    script = _SCRIPT.format(python=python, package_parent=package_parent)
    if len(script.partition("\n")[0]) >= _SHEBANG_MAX:
        raise ValueError(f"the interpreter path {python!r} is too long for a #! line")

    bin_dir.mkdir(parents=True, exist_ok=True)
    target = bin_dir / name
    descriptor, temporary = tempfile.mkstemp(dir=bin_dir, prefix=f".{name}.")
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(script)
            file.flush()
            os.fchmod(file.fileno(), 0o755)
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
