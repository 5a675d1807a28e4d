"""JSON text every parser reads: the files and printouts that tools other than Python open.

JSON has no NaN or infinity. Python writes them as the bare tokens ``NaN`` and ``Infinity``,
which JavaScript's ``JSON.parse``, Go, jq 1.6 and most JSON tooling refuse, so one undefined
metric (a PR-AUC with no labeled anomaly) made a whole ``champion.json`` unreadable to them.
Here they are written as ``null``, as pandas and orjson write them, and numpy numbers as plain
numbers.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as None and numpy scalars and arrays as Python
    numbers and lists, through dicts, lists and tuples; anything else unchanged (for
    ``json.dumps``' ``default``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_key(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def _key(key: Any) -> Any:
    return key.item() if isinstance(key, np.generic) else key


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`json_safe` ``(value)``: standard JSON, never NaN or Infinity."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)
