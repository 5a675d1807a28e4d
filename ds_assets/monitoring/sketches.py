"""Quantile sketches of a distribution and the drift statistics computed from them alone.

A sketch keeps a reference small and free of raw training rows; the statistics are effect sizes
that do not grow with the sample size (W1 over the reference std, PSI), plus a KS test on the
sketch's grid whose p-values are corrected across features (Benjamini-Hochberg).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

N_QUANTILES = 201  # probability grid 0, 0.005, ..., 1
PSI_BINS = 10
PSI_FLOOR = 1e-4  # proportion floor so an empty bin gives a large, finite PSI
FEATURE_STATS = ("wasserstein", "psi")  # the statistics feature_statistics returns


class DriftError(ValueError):
    """Input that drift statistics cannot use; the message names the feature or file."""


def _probs() -> np.ndarray:
    return np.linspace(0.0, 1.0, N_QUANTILES)



def finite_values(values: np.ndarray | Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        raise DriftError(f"{what}: no finite values to build a distribution from")
    return arr


@dataclass(frozen=True)
class Sketch:
    """One distribution as quantiles on the fixed grid, with mean, std and row count."""

    quantiles: np.ndarray
    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: np.ndarray | Sequence[float], what: str = "values") -> Sketch:
        arr = finite_values(values, what)
        return cls(
            quantiles=np.quantile(arr, _probs()),
            mean=float(arr.mean()),
            std=float(arr.std()),
            n=int(arr.size),
        )

    def cdf_at_grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distinct quantile values and bounds [lower, upper] of the reference CDF there.

        At a continuous value the CDF is the grid probability itself. A value repeated on the
        grid is a point mass (e.g. a rate clipped at 0): the CDF there is at least the largest
        probability with that quantile and below the next grid probability, so the bounds
        differ by one grid step and ties never look like drift.
        """
        values, last, counts = np.unique(
            self.quantiles[::-1], return_index=True, return_counts=True
        )
        lower = _probs()[::-1][last]
        step = 1.0 / (N_QUANTILES - 1)
        upper = np.where(counts > 1, np.minimum(lower + step, 1.0), lower)
        return values, lower, upper

    @property
    def scale(self) -> float:
        """The std, or a tiny positive number for a constant feature (so any move is huge)."""
        return self.std if self.std > 0 else 1e-9 * max(1.0, abs(self.mean))

    def to_dict(self) -> dict[str, Any]:
        return {"quantiles": [float(q) for q in self.quantiles], "mean": self.mean,
                "std": self.std, "n": self.n}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], what: str) -> Sketch:
        try:
            q = np.asarray(data["quantiles"], dtype=np.float64)
            sketch = cls(q, float(data["mean"]), float(data["std"]), int(data["n"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DriftError(f"{what}: not a valid sketch ({exc})") from exc
        if q.shape != (N_QUANTILES,) or not np.all(np.diff(q) >= 0):
            raise DriftError(
                f"{what}: expected {N_QUANTILES} non-decreasing quantiles, got shape {q.shape}"
            )
        return sketch


def wasserstein_normalized(sample: np.ndarray, ref: Sketch) -> float:
    """W1 between quantile functions on the grid, in units of the reference std."""
    q = np.quantile(sample, _probs())
    return float(np.trapezoid(np.abs(q - ref.quantiles), _probs()) / ref.scale)


def psi(sample: np.ndarray, ref: Sketch, bins: int = PSI_BINS) -> float:
    """Population stability index on bins bounded by the reference's ``1/bins`` quantiles."""
    idx = np.rint(np.arange(1, bins) * (N_QUANTILES - 1) / bins).astype(int)
    edges = np.unique(ref.quantiles[idx])
    values, ref_cdf, _ = ref.cdf_at_grid()
    # every edge is a grid quantile, so the reference CDF there is exact (point masses included)
    expected_cdf = ref_cdf[np.searchsorted(values, edges)]
    expected = np.diff(np.concatenate([[0.0], expected_cdf, [1.0]]))
    sample_sorted = np.sort(sample)
    actual_cdf = np.searchsorted(sample_sorted, edges, side="right") / sample.size
    actual = np.diff(np.concatenate([[0.0], actual_cdf, [1.0]]))
    e = np.maximum(expected, PSI_FLOOR)
    a = np.maximum(actual, PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_grid(sample: np.ndarray, ref: Sketch) -> tuple[float, float]:
    """KS distance on the reference quantile grid and its two-sample asymptotic p-value.

    Restricting the sup to grid points makes D a lower bound of the full KS distance, so the
    test is conservative; the effective size n*m/(n+m) accounts for the reference being a
    sample itself.
    """
    values, lower, upper = ref.cdf_at_grid()
    ordered = np.sort(sample)
    sample_cdf = np.searchsorted(ordered, values, side="right") / sample.size
    d = float(np.max(np.maximum(np.maximum(sample_cdf - upper, lower - sample_cdf), 0.0)))
    # below the reference's minimum (its first grid value) its CDF is 0: the grid alone never
    # saw mass there (a constant sensor that drops was D = 0)
    d = max(d, float(np.searchsorted(ordered, values[0], side="left")) / sample.size)
    # SciPy takes 1.2 s to import: here, where a report is computed, not in the code location
    from scipy import stats

    n_eff = sample.size * ref.n / (sample.size + ref.n)
    return d, float(stats.kstwobign.sf(d * math.sqrt(n_eff)))


def benjamini_hochberg(pvalues: Sequence[float]) -> np.ndarray:
    """BH-adjusted p-values (false discovery rate across the features of one report)."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.size == 0:
        return p
    from scipy import stats

    return np.asarray(stats.false_discovery_control(p, method="bh"))


def feature_statistics(sample: np.ndarray, ref: Sketch) -> dict[str, float]:
    return {"wasserstein": wasserstein_normalized(sample, ref), "psi": psi(sample, ref)}

