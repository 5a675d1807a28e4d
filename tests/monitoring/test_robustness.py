"""Robustness scenarios on a known detector: each corruption moves the metrics the expected way."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper

from ds_assets.monitoring.robustness import (
    RobustnessError,
    RobustnessSettings,
    impute_missing,
    robustness_report,
    summary,
)
from ds_serving.scoring import Scorer, ScoringInputError

FEATURES = ["a", "b", "c", "d"]
MEAN = np.array([10.0, 20.0, 30.0, 40.0], np.float32)
STD = np.array([1.0, 2.0, 3.0, 4.0], np.float32)


def _zscore_graph() -> bytes:
    """score = sum of squared z-scores, feature_errors = squared z-scores (a diagonal detector)."""
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", len(FEATURES)])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])
    errors = helper.make_tensor_value_info("feature_errors", TensorProto.FLOAT,
                                           ["batch", len(FEATURES)])
    nodes = [
        helper.make_node("Sub", ["features", "mean"], ["centered"]),
        helper.make_node("Div", ["centered", "std"], ["z"]),
        helper.make_node("Mul", ["z", "z"], ["feature_errors"]),
        helper.make_node("ReduceSum", ["feature_errors", "axes"], ["score"], keepdims=0),
    ]
    inits = [numpy_helper.from_array(MEAN, "mean"), numpy_helper.from_array(STD, "std"),
             numpy_helper.from_array(np.array([1], np.int64), "axes")]
    graph = helper.make_graph(nodes, "z", [x], [score, errors], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _rows(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    values = MEAN + rng.normal(size=(n, len(FEATURES))) * STD
    label = rng.random(n) < 0.03
    cols = rng.integers(len(FEATURES), size=n)
    values[label, cols[label]] += 7.0 * STD[cols[label]]
    frame = pd.DataFrame(values.astype(np.float32), columns=FEATURES)
    frame.insert(0, "timestamp", pd.date_range("2026-11-01", periods=n, freq="min", tz="UTC"))
    frame.insert(1, "host_id", "h1")
    frame["label"] = label.astype(np.int8)
    frame["anomaly_type"] = np.where(label, "spike", "none")
    return frame


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    scorer = Scorer(_zscore_graph(), features=FEATURES, threshold=20.0, backend="cpu")
    return robustness_report(
        scorer, _rows(),
        scale=dict(zip(FEATURES, STD.tolist(), strict=True)),
        medians=dict(zip(FEATURES, MEAN.tolist(), strict=True)),
        settings=RobustnessSettings(noise_levels=(0.1, 1.0), missing_fraction=0.1,
                                    outlier_fraction=0.05, drift_shift=3.0),
    ).set_index("scenario")


def test_clean_result_comes_first_and_is_good(table: pd.DataFrame) -> None:
    assert list(table.index) == ["clean", "noise_0.1", "noise_1", "missing", "outliers", "drift"]
    assert table.loc["clean", "f1"] > 0.9
    assert table.loc["clean", "f1_change"] == 0.0


def test_each_corruption_costs_what_it_should(table: pd.DataFrame) -> None:
    assert abs(table.loc["noise_0.1", "f1_change"]) < 0.05  # small noise: barely matters
    assert table.loc["noise_1", "false_alarm_rate"] > 5 * table.loc["clean", "false_alarm_rate"]
    # ~1 - 0.9^4 of rows lose a value; imputing the median cannot create alarms, only miss some
    assert table.loc["missing", "rows_changed"] == pytest.approx(4000 * (1 - 0.9**4), rel=0.1)
    assert table.loc["missing", "false_alarm_rate"] <= table.loc["clean", "false_alarm_rate"]
    assert table.loc["missing", "recall"] < table.loc["clean", "recall"]
    assert table.loc["outliers", "false_alarm_rate"] > 0.03  # every outlier row raises a flag
    assert table.loc["drift", "false_alarm_rate"] > 0.5
    assert summary(table.reset_index())["worst_scenario"] in {"drift", "noise_1"}


def test_scorer_rejects_missing_values_so_imputation_is_explicit() -> None:
    rows = _rows(10)
    rows.loc[3, "b"] = np.nan
    scorer = Scorer(_zscore_graph(), features=FEATURES, threshold=20.0, backend="cpu")
    with pytest.raises(ScoringInputError, match="feature 'b' is nan"):
        scorer.score(rows[FEATURES].to_numpy(np.float32))
    filled, n = impute_missing(rows, FEATURES, dict(zip(FEATURES, MEAN.tolist(), strict=True)))
    assert n == 1 and filled.loc[3, "b"] == 20.0
    with pytest.raises(RobustnessError, match=r"feature\(s\) \['d'\]"):
        impute_missing(rows, FEATURES, {"a": 1.0, "b": 1.0, "c": 1.0})
