"""The node-local flat file ``whereabouts.conf`` (settings a NAD leaves out)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from whereabouts_py.core.config import flat_file_candidates
from whereabouts_py.errors import ConfigError


def read_flat_file(configuration_path: str | None) -> dict[str, Any]:
    """The first existing whereabouts.conf of the lookup order, or {}."""
    for candidate in flat_file_candidates(configuration_path):
        path = Path(candidate)
        try:
            if not path.is_file():
                continue
            content = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            raise ConfigError("configuration_path", candidate, f"unreadable: {error}") from None
        if not isinstance(content, dict):
            raise ConfigError("configuration_path", candidate, "must hold a JSON object")
        return content
    return {}
