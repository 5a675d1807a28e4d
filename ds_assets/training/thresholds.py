"""Threshold calibration from training/validation data only; the rule travels in the manifest.

Three rules:
- ``quantile``: a quantile of the scores of normal validation rows, times a margin (>= 1 widens
  the band for unseen normal behaviour). Needs no labels.
- ``pot``: peaks over threshold (SPOT, Siffer et al., KDD 2017): a generalized Pareto
  distribution fitted to the normal validation scores above their ``level`` quantile gives the
  score exceeded with probability ``risk``, beyond what the rows themselves can resolve. Needs
  no labels.
- ``best_f1``: the threshold maximizing F1 on a *labeled validation* split (never the test split,
  whose labels measure the result).

Scope: ``global`` (one threshold) or ``entity``: each entity's own threshold by the same rule
from its own normal validation rows (``entity_thresholds``), for hosts that differ in level; an
entity with too few rows, and any entity unseen in training, keeps the global one.

Both follow the deployed rule ``flag = score > threshold`` (strict), evaluated in float32 like the
scorer, so the flags on the calibration rows are exactly the ones the rule's numbers describe.
Rows without a score (NaN: a temporal model's warm-up rows) are left out and counted.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from ds_serving.windows import entity_groups

RULES = ("auto", "quantile", "pot", "best_f1")
SCOPES = ("global", "entity")
MIN_PEAKS = 10
# an entity's own threshold needs this many scored validation rows (below: the global one)
MIN_ENTITY_ROWS = 100


class ThresholdError(ValueError):
    """Calibration inputs that cannot give a threshold; the message says which and why."""


def _scored(scores: np.ndarray, what: str) -> tuple[np.ndarray, int]:
    scores = np.asarray(scores, dtype=np.float32).ravel()
    missing = np.isnan(scores)
    kept = scores[~missing]
    if not np.isfinite(kept).all():
        raise ThresholdError(f"{what} contain +/-inf; check the validation rows and the model")
    return kept, int(missing.sum())


def calibrate_quantile(
    scores: np.ndarray, quantile: float = 0.995, margin: float = 1.0
) -> tuple[float, dict[str, Any]]:
    """Threshold = quantile of normal validation scores x margin; returns (value, rule)."""
    if not 0.0 < quantile < 1.0:
        raise ThresholdError(f"quantile={quantile} must be strictly between 0 and 1")
    if not margin > 0:
        raise ThresholdError(f"margin={margin} must be > 0")
    kept, unscored = _scored(scores, "calibration scores")
    if kept.size == 0:
        raise ThresholdError(
            "no calibration scores: the validation split has no scored normal rows"
            + (f" ({unscored} rows had no score, e.g. shorter than the window)" if unscored else "")
        )
    q = float(np.quantile(kept.astype(np.float64), quantile))
    value = float(np.float32(widened(q, margin)))
    rule = {
        "rule": "quantile",
        "quantile": quantile,
        "margin": margin,
        "quantile_value": q,
        "calibration_rows": int(kept.size),
        "unscored_rows": unscored,
        "calibration_split": "validation (normal rows)",
        "flag": "score > threshold",
    }
    return value, rule


def calibrate_pot(
    scores: np.ndarray, risk: float = 1e-3, level: float = 0.98, margin: float = 1.0
) -> tuple[float, dict[str, Any]]:
    """Threshold with exceedance probability ``risk`` from a GPD fitted (maximum likelihood) to
    the peaks of the normal validation scores over their ``level`` quantile; returns
    (value, rule with the fitted numbers)."""
    from scipy.stats import genpareto

    if not 0.0 < level < 1.0:
        raise ThresholdError(f"pot level={level} must be strictly between 0 and 1")
    if not 0.0 < risk < 1.0 - level:
        raise ThresholdError(f"pot risk={risk} must be above 0 and below 1 - level "
                             f"({1.0 - level:g}): a rarer event than the peaks' own rate")
    if not margin > 0:
        raise ThresholdError(f"margin={margin} must be > 0")
    kept, unscored = _scored(scores, "calibration scores")
    values = kept.astype(np.float64)
    if values.size == 0:
        raise ThresholdError("no calibration scores: the validation split has no scored rows")
    # few rows: lower the level until MIN_PEAKS rows lie above it (the tail fit needs peaks;
    # the fitted risk still extrapolates beyond them), and record the level used
    used = min(level, 1.0 - MIN_PEAKS / values.size) if values.size > MIN_PEAKS else level
    initial = float(np.quantile(values, used))
    peaks = values[values > initial] - initial
    if peaks.size < MIN_PEAKS or values.size < 2 * MIN_PEAKS:
        raise ThresholdError(
            f"pot needs at least {MIN_PEAKS} validation scores above its level and "
            f"{2 * MIN_PEAKS} scores in all, got {peaks.size} above the {used:.4g} quantile of "
            f"{values.size} (tied scores?); use more validation rows or the quantile rule")
    shape, _, scale = genpareto.fit(peaks, floc=0.0)
    rule = {
        "rule": "pot",
        "risk": risk,
        "level": level,
        "level_used": used,
        "margin": margin,
        "initial_threshold": initial,
        "peaks": int(peaks.size),
        "gpd_shape": float(shape),
        "gpd_scale": float(scale),
        "calibration_rows": int(values.size),
        "unscored_rows": unscored,
        "calibration_split": "validation (normal rows)",
        "flag": "score > threshold",
    }
    return pot_at(rule, risk, margin)


def pot_at(fitted: dict[str, Any], risk: float, margin: float = 1.0,
           ) -> tuple[float, dict[str, Any]]:
    """The threshold of a fitted POT tail (``calibrate_pot``'s rule) at another ``risk`` and
    ``margin``, without refitting: the fit does not depend on them."""
    level = float(fitted["level_used"])
    if not 0.0 < risk < 1.0 - level:
        raise ThresholdError(f"pot risk={risk} must be above 0 and below 1 - level "
                             f"({1.0 - level:g}): a rarer event than the peaks' own rate")
    if not margin > 0:
        raise ThresholdError(f"margin={margin} must be > 0")
    shape, scale = float(fitted["gpd_shape"]), float(fitted["gpd_scale"])
    initial = float(fitted["initial_threshold"])
    ratio = risk * fitted["calibration_rows"] / fitted["peaks"]
    if abs(shape) < 1e-9:
        z = initial - scale * float(np.log(ratio))
    else:
        z = initial + scale / shape * (ratio ** (-shape) - 1.0)
    return float(np.float32(widened(z, margin))), {**fitted, "risk": risk, "margin": margin,
                                                    "pot_value": float(z)}


def widened(value: float, margin: float) -> float:
    """``value`` moved away from zero by ``margin`` (x margin for a positive value): a margin
    above 1 always raises the threshold, also for a negative score scale, where multiplying
    lowered it and flagged most normal rows."""
    return value + (margin - 1.0) * abs(value)


def calibrate_best_f1(scores: np.ndarray, labels: np.ndarray) -> tuple[float, dict[str, Any]]:
    """Threshold maximizing F1 of ``score > threshold`` on labeled validation rows.

    Candidates sit between consecutive distinct scores, so each one separates a different top
    set; ties for the best F1 take the highest threshold (fewest flags).
    """
    raw = np.asarray(scores, dtype=np.float32).ravel()
    y = np.asarray(labels).ravel()
    if len(raw) != len(y):
        raise ThresholdError(f"got {len(raw)} scores but {len(y)} labels; need one label per row")
    if not np.isin(y, (0, 1)).all():
        raise ThresholdError(f"labels must be 0/1, got values {sorted(set(y.tolist()))[:5]}")
    keep = ~np.isnan(raw)
    s, unscored = _scored(raw, "calibration scores")
    y = y[keep].astype(np.int64)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise ThresholdError(
            f"best_f1 needs both normal and anomalous labeled validation rows, got {n_pos} "
            f"anomalous of {len(y)} scored rows; use the quantile rule"
        )
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tps = np.cumsum(y_sorted)
    fps = np.cumsum(1 - y_sorted)
    # group ends: the last position of each run of equal scores
    ends = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])
    f1 = 2.0 * tps[ends] / (tps[ends] + fps[ends] + n_pos)
    best = int(np.flatnonzero(f1 == f1.max())[0])
    i = ends[best]
    upper = s_sorted[i]  # lowest flagged score
    lower = s_sorted[i + 1] if i + 1 < len(s_sorted) else None  # highest unflagged score
    value = _between(upper, lower)
    tp, fp = int(tps[i]), int(fps[i])
    rule = {
        "rule": "best_f1",
        "f1": float(f1[best]),
        "precision": tp / (tp + fp),
        "recall": tp / n_pos,
        "calibration_rows": len(y),
        "calibration_positives": n_pos,
        "unscored_rows": unscored,
        "calibration_split": "validation (labeled)",
        "flag": "score > threshold",
    }
    return value, rule


def _between(upper: np.float32, lower: np.float32 | None) -> float:
    """A float32 t with lower <= t < upper (midpoint when representable)."""
    below = np.nextafter(np.float32(upper), np.float32(-np.inf))
    if lower is None:
        return float(below)
    mid = np.float32((float(upper) + float(lower)) / 2.0)
    return float(mid if lower <= mid < upper else below)


def calibrate_threshold(
    scores: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    rule: str = "auto",
    quantile: float = 0.995,
    margin: float = 1.0,
    risk: float = 1e-3,
    level: float = 0.98,
) -> tuple[float, dict[str, Any]]:
    """Pick the rule: ``auto`` uses best-F1 when validation labels contain both classes, else
    the quantile of the normal validation rows; ``pot`` fits their tail (``risk``, ``level``)."""
    if rule not in RULES:
        raise ThresholdError(f"threshold rule={rule!r}: choose one of {', '.join(RULES)}")
    y = None if labels is None else np.asarray(labels).ravel()
    if y is not None and len(y) != np.asarray(scores).size:
        raise ThresholdError(f"got {np.asarray(scores).size} scores but {len(y)} labels")
    # count classes among scored rows only: a temporal model's warm-up rows have no score
    scored_y = None if y is None else y[np.isfinite(np.asarray(scores, np.float64).ravel())]
    has_both = scored_y is not None and 0 < int((scored_y == 1).sum()) < len(scored_y)
    if rule == "best_f1" or (rule == "auto" and has_both):
        if y is None:
            raise ThresholdError("threshold rule='best_f1' needs validation labels")
        return calibrate_best_f1(scores, y)
    normal = np.asarray(scores).ravel()
    if y is not None:
        if len(y) != len(normal):
            raise ThresholdError(f"got {len(normal)} scores but {len(y)} labels")
        normal = normal[y == 0]
    if rule == "pot":
        return calibrate_pot(normal, risk, level, margin)
    return calibrate_quantile(normal, quantile, margin)


def entity_thresholds(
    scores: np.ndarray,
    entities: Sequence[Hashable] | np.ndarray,
    calibrate: Callable[[np.ndarray, Hashable], float],
    min_rows: int = MIN_ENTITY_ROWS,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Each entity's own threshold, ``calibrate(its scored rows, entity)``. An entity with fewer
    than ``min_rows`` scored rows, or whose calibration fails (``ThresholdError``, a non-finite
    value: a tail too thin), gets none and is flagged against the global threshold. Returns
    (entity id as text -> threshold, sorted; the counts for the manifest's rule)."""
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 1:
        raise ThresholdError(f"min_entity_rows={min_rows!r} must be a whole number >= 1")
    values = np.asarray(scores, np.float32).ravel()
    keys = np.asarray(entities)
    if len(keys) != len(values):
        raise ThresholdError(f"got {len(values)} scores but {len(keys)} entity ids")
    out: dict[str, float] = {}
    thin = failed = 0
    for key, positions in entity_groups(keys) if len(keys) else []:
        own = values[positions]
        own = own[~np.isnan(own)]
        if len(own) < min_rows:
            thin += 1
            continue
        try:
            value = float(calibrate(own, key))
        except ThresholdError:
            value = float("nan")
        if not np.isfinite(value):
            failed += 1
            continue
        out[str(key)] = value
    return dict(sorted(out.items())), {
        "scope": "entity", "min_entity_rows": min_rows, "entities_calibrated": len(out),
        "entities_too_few_rows": thin, "entities_failed": failed}
