"""Counts read from manifests and run configs (rows, flags, a horizon): whole numbers only, so
a bundle never runs another policy than the one its manifest records (``int(2.7)`` is 2)."""

from __future__ import annotations

from typing import Any


def whole_number(value: Any) -> int | None:
    """``value`` as an int when it is a whole number (2, or 2.0 as JSON may write it); None
    for anything else (2.7, NaN, True, "2")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
