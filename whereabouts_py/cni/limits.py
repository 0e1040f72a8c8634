"""How deeply JSON input may nest, checked without recursion.

Standard library only and free of I/O, so that the shim, the wire protocol and
the pure configuration parser share it: a configuration nested deeper than any
real one is refused before it can exhaust the interpreter's stack in a decoder,
a copy or a message.
"""

from __future__ import annotations

# typing costs milliseconds at every CNI call; it is only needed to type-check.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Levels of lists and objects in a configuration (real ones use fewer than 10).
MAX_DEPTH = 64


def nesting_depth(value: object, limit: int = MAX_DEPTH) -> int:
    """How deeply ``value`` nests lists and objects, counted up to ``limit + 1``.

    Iterative, so that no nesting can exhaust the interpreter's stack.
    """
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth) for child in children)
    return deepest
