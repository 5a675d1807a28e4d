import json
import math

import numpy as np
import pytest

from ds_serving import jsonio


def strict_loads(text: str) -> object:
    """JSON as JavaScript, Go and jq 1.6 read it: the NaN and Infinity tokens are errors."""
    def refuse(token: str) -> None:
        raise ValueError(f"not standard JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_undefined_and_infinite_figures_are_written_as_null() -> None:
    value = {"pr_auc": math.nan, "ratio": math.inf, "low": -math.inf, "f1": 0.5,
             "nested": [{"x": np.float32("nan")}, (np.float64(np.inf), 1)],
             "array": np.array([1.0, np.nan]), "count": np.int64(3), "flag": np.bool_(True),
             np.int64(7): "numpy key"}
    text = jsonio.dumps(value)
    assert strict_loads(text) == {
        "pr_auc": None, "ratio": None, "low": None, "f1": 0.5,
        "nested": [{"x": None}, [None, 1]], "array": [1.0, None], "count": 3, "flag": True,
        "7": "numpy key"}
    # what Python's own json writes, which the strict parser refuses
    with pytest.raises(ValueError, match="NaN"):
        strict_loads(json.dumps({"pr_auc": math.nan}))


def test_other_objects_still_go_through_default() -> None:
    class Thing:
        def __str__(self) -> str:
            return "thing"

    assert strict_loads(jsonio.dumps({"a": Thing()}, default=str)) == {"a": "thing"}
    with pytest.raises(TypeError):
        jsonio.dumps({"a": Thing()})
