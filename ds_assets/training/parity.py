"""Whether a scoring graph computes what its reference does: the tolerances, the comparison of
two (score, feature_errors) pairs, and onnxruntime's outputs.

Apart from ``export`` (which builds graphs with torch) so that the TensorRT step and the code
location compare outputs without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ds_serving.bundle import INPUT_NAME, OUTPUT_NAMES

# max |onnx - reference| relative to the largest reference output on the same inputs
PARITY_RTOL = 1e-5
# element by element, parity allows this many times the batch tolerance (ParityResult)
ELEMENT_FACTOR = 100.0


@dataclass(frozen=True)
class ParityResult:
    rows: int
    max_abs_diff_score: float
    max_abs_diff_feature_errors: float
    max_rel_diff: float  # max |onnx - reference| relative to the largest reference magnitude
    tolerance: float
    reference: str = "torch"
    # the largest |onnx - reference| / (|reference| + the median magnitude), element by element:
    # over the batch's largest magnitude alone, one heavy-tailed anomaly's score hid a normal
    # row 250x off, where thresholds sit
    max_element_rel_diff: float = 0.0

    @property
    def element_tolerance(self) -> float:
        """ELEMENT_FACTOR x ``tolerance``: float32 exports differ element by element by
        0.2-1.2e-5 of the value (measured on the four families, CPU), 20x the batch figure."""
        return ELEMENT_FACTOR * self.tolerance

    @property
    def passed(self) -> bool:
        return (self.max_rel_diff <= self.tolerance
                and self.max_element_rel_diff <= self.element_tolerance)


def compare_outputs(
    reference: tuple[np.ndarray, np.ndarray],
    candidate: tuple[np.ndarray, np.ndarray],
    tolerance: float,
    reference_name: str,
) -> ParityResult:
    """Max absolute and relative (to the largest reference magnitude) output differences."""
    ref_score, ref_errors = (np.asarray(a, np.float64) for a in reference)
    got_score, got_errors = (np.asarray(a, np.float64) for a in candidate)
    d_score = float(np.max(np.abs(got_score - ref_score)))
    d_errors = float(np.max(np.abs(got_errors - ref_errors)))
    scale_score = max(float(np.max(np.abs(ref_score))), 1e-12)
    scale_errors = max(float(np.max(np.abs(ref_errors))), 1e-12)
    rel = max(d_score / scale_score, d_errors / scale_errors)
    element = max(_element_relative(got_score, ref_score),
                  _element_relative(got_errors, ref_errors))
    if not (np.isfinite(got_score).all() and np.isfinite(got_errors).all()):
        rel = element = float("inf")
    return ParityResult(
        rows=len(ref_score),
        max_abs_diff_score=d_score,
        max_abs_diff_feature_errors=d_errors,
        max_rel_diff=rel,
        tolerance=tolerance,
        reference=reference_name,
        max_element_rel_diff=element,
    )


def _element_relative(got: np.ndarray, ref: np.ndarray) -> float:
    if got.shape != ref.shape:  # broadcasting would hide a wrong output shape
        return float("inf")
    if not ref.size:
        return 0.0
    magnitude = np.abs(ref)
    typical = max(float(np.median(magnitude)), 1e-12)
    return float(np.max(np.abs(got - ref) / (magnitude + typical)))


def ort_outputs(onnx_bytes: bytes, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(score, feature_errors) of a scoring graph on onnxruntime CPU: the parity reference."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    score, errors = session.run(list(OUTPUT_NAMES), {INPUT_NAME: inputs})
    return np.asarray(score), np.asarray(errors)
