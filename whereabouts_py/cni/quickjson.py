"""JSON for the shim without importing ``json`` (which imports ``re``, ``enum`` and more).

The shim starts once per CNI call, and importing the ``json`` package costs
more CPU than the rest of the shim. Its C accelerator ``_json`` (standard
library, always built in CPython) does the actual work here; only for input
that is not plain UTF-8 JSON, or that the accelerator refuses, is ``json``
itself imported and asked again, so every answer, error and message is
exactly ``json``'s.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_WHITESPACE = " \t\n\r"
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _Context:
    """What ``_json.make_scanner`` reads from a decoder: ``json``'s defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__
    memo: dict[str, str] = {}  # noqa: RUF012 (read by _json, as json's decoder has it)


# typeshed types the context as a scanner; any object with these attributes will do.
_scan = _json.make_scanner(_Context())  # type: ignore[arg-type]


def _slow_loads(data: str | bytes) -> Any:
    import json

    return json.loads(data)


def loads(data: str | bytes) -> Any:
    """``json.loads(data)``: same value, same exceptions."""
    if isinstance(data, bytes):
        if data[:4].count(0) or data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
            return _slow_loads(data)  # UTF-16/32 or a byte order mark: json decides
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return _slow_loads(data)
    else:
        text = data
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except RecursionError:
        raise
    except Exception:  # StopIteration or JSONDecodeError: let json say it its own way
        return _slow_loads(data)
    if text[end:].strip(_WHITESPACE):
        return _slow_loads(data)  # extra data
    return value


def _unserializable(value: object) -> object:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


_COMPACT = _json.make_encoder(
    None, _unserializable, _json.encode_basestring_ascii, None, ":", ",", False, False, True
)
_SPACED = _json.make_encoder(
    None, _unserializable, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True
)


def dumps(value: object, *, compact: bool = False) -> str:
    """``json.dumps(value)`` (``separators=(",", ":")`` when ``compact``), for acyclic values."""
    if isinstance(value, str):
        return str(_json.encode_basestring_ascii(value))
    encoder = _COMPACT if compact else _SPACED
    return "".join(encoder(value, 0))
