"""One Go program from the module proxy, built once and cached by version.

Each tool has a wrapper module folder (``gomod-<tool>/``) whose go.mod pins
the release and whose go.sum pins its whole dependency graph. The cache key
holds the version and a digest of both files, so a new pin builds anew and
an unchanged one never does. ``multus.py``, ``goplugin.py`` and ``helm.py``
each describe one such tool.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from whereabouts_py_dev.binaries import (
    BuildError,
    build_once,
    cache_root,
    go_build,
    module_digest,
)


@dataclass(frozen=True)
class PinnedGoTool:
    """A binary built from ``package`` of ``module`` at ``version`` through ``gomod_dir``."""

    title: str  # how messages name it, e.g. "the Multus thin plugin"
    binary: str  # the executable's name in the cache
    cache_group: str  # the cache folder of every version of it
    module: str
    package: str
    version: str
    gomod_dir: Path
    # -X flags (without -s -w); "{version}" is replaced by the version.
    version_flag: str
    duration: str = "about a minute"

    def cache_dir(self) -> Path:
        key = f"{self.binary}-{self.version}-{module_digest(self.gomod_dir)}"
        return cache_root() / self.cache_group / key

    def pinned_version(self) -> str:
        """The version of ``module`` that the wrapper's go.mod requires."""
        gomod = self.gomod_dir / "go.mod"
        pattern = rf"^\s*(?:require\s+)?{re.escape(self.module)}\s+(\S+)"
        match = re.search(pattern, gomod.read_text(), re.MULTILINE)
        if match is None:
            raise BuildError(f"{gomod} does not require {self.module}")
        return match.group(1)

    def ensure(self, log: Callable[[str], None] | None = None) -> Path:
        """Return the cached executable, building it first (only once)."""
        emit = log or (lambda line: print(line, file=sys.stderr, flush=True))
        target = self.cache_dir()

        def build(staging: Path) -> None:
            pinned = self.pinned_version()
            if pinned != self.version:
                raise BuildError(
                    f"{self.gomod_dir / 'go.mod'} pins {self.module} {pinned} but the tooling "
                    f"expects {self.version}; update both together"
                )
            go_build(
                self.package,
                staging / self.binary,
                module_dir=self.gomod_dir,
                ldflags=f"-s -w -X {self.version_flag.format(version=self.version)}",
                name=f"{self.binary} {self.version}",
                log=emit,
                hint=f"; the Go module proxy must serve {self.module} and its dependencies",
            )

        build_once(
            target,
            [self.binary],
            build,
            f"devcluster: first run: compiling {self.title} {self.version} into {target} "
            f"({self.duration}, only once)",
        )
        return target / self.binary
