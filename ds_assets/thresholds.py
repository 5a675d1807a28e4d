"""Threshold calibration on held-out normal scores; the rule travels in the bundle manifest."""

from __future__ import annotations

from typing import Any

import numpy as np


def calibrate_quantile(
    scores: np.ndarray, quantile: float = 0.995, margin: float = 1.0
) -> tuple[float, dict[str, Any]]:
    """Threshold = quantile of normal validation scores x margin; returns (value, rule)."""
    scores = np.asarray(scores, dtype=np.float64)
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile={quantile} must be strictly between 0 and 1")
    if margin <= 0:
        raise ValueError(f"margin={margin} must be > 0")
    if scores.size == 0:
        raise ValueError("no calibration scores: the validation split has no normal rows")
    if not np.isfinite(scores).all():
        raise ValueError("calibration scores contain NaN/inf; check the validation rows")
    value = float(np.quantile(scores, quantile)) * margin
    rule = {
        "rule": "quantile",
        "quantile": quantile,
        "margin": margin,
        "calibration_rows": int(scores.size),
        "calibration_split": "validation (normal rows)",
    }
    return value, rule
