"""bench.drift_labels: the with/without-labels comparison and its targets."""

from __future__ import annotations

from typing import Any

import pytest

from bench.drift_labels import compare


def _run(old_far: float, new_far: float, new_recall: float) -> dict[str, Any]:
    side = {"f1": 0.3, "injected_recall": 0.9}
    return {"drift": {"decision": {"promote": True, "evidence": "injected", "reason": "r"},
                      "out_of_sample": {"day": "2026-11-12",
                                        "old": {**side, "false_alarm_rate": old_far},
                                        "new": {**side, "false_alarm_rate": new_far,
                                                "injected_recall": new_recall}}}}


@pytest.mark.parametrize(("new_far", "recall", "fall_ok", "recall_ok"), [
    (0.02, 0.66, True, True),     # 23x fewer, same recall
    (0.05, 0.66, False, True),    # 9.2x: short of 10x
    (0.02, 0.60, True, False),    # recall 0.06 below the labeled retrain's
])
def test_targets(new_far: float, recall: float, fall_ok: bool, recall_ok: bool) -> None:
    labeled = _run(0.46, 0.0055, 0.66)
    result = compare(labeled, _run(0.46, new_far, recall))
    assert result["false_alarm_fall_x"] == pytest.approx(0.46 / new_far)
    assert result["injected_recall_gap"] == pytest.approx(recall - 0.66)
    assert result["targets"] == {"false_alarm_fall_at_least_10x": fall_ok,
                                 "recall_within_0.05_of_labeled": recall_ok}
