"""From rows to a published model: training sets, detectors, thresholds, ONNX export, TensorRT
compilation, bundle building and the promotion gate. Plain Python (no Dagster)."""
