"""How deeply a decoded JSON value nests, counted without recursion."""

from __future__ import annotations

from typing import Any


def json_depth(value: Any, limit: int) -> int:
    """How deeply `value` nests lists and objects, counted up to `limit + 1` (iteratively)."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level and depth <= limit:
        depth += 1
        deeper = []
        for node in level:
            for child in node.values() if isinstance(node, dict) else node:
                if type(child) is dict or type(child) is list:
                    deeper.append(child)
        level = deeper
    return depth
