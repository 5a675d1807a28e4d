#!/usr/bin/env bash
# The GPU paths on a lent device, in one call (issue 21): install the carried wheels, run the
# gpu tests, CUDA training, CUDA/TensorRT parity, the served backend and the scorer benchmark
# on cpu and cuda. Everything it writes goes under $OUT (logs + JSON).
#
# The device machine reaches no registry and takes at most 64 MiB per call, so wheels travel in
# .whl/ (git-ignored) and a large one in parts (NAME.whl.part-aa, -ab, ... and NAME.whl.sha256)
# over several calls on the same warm machine:
#   bash bench/gpu_check.sh stash     # keep .whl/* in /tmp/ds-wheels, nothing else
#   bash bench/gpu_check.sh           # reassemble, install, run everything
# The device's python3 (its own torch with CUDA) runs the code from the checkout: a fresh venv
# with the project's 'gpu' extra cannot be installed there without a registry.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-check-out}
STASH=/tmp/ds-wheels
PY=${PY:-python3}
mkdir -p "$OUT" "$STASH"
if compgen -G ".whl/*" >/dev/null; then mv -f .whl/* "$STASH"/; fi
if [ "${1:-run}" = stash ]; then
  ls -la "$STASH"; nvidia-smi -L; $PY -c "import sys, torch; print(sys.version, torch.__version__)"
  exit 0
fi
exec > >(tee "$OUT/gpu_check.log") 2>&1
date -u; nvidia-smi -L

for sum in "$STASH"/*.whl.sha256; do
  [ -e "$sum" ] || continue
  whl=${sum%.sha256}
  cat "$whl".part-* > "$whl"
  (cd "$STASH" && sha256sum -c "$(basename "$sum")") || { echo "FAILED: reassembling $whl"; rm -f "$whl"; }
done
if compgen -G "$STASH/*.whl" >/dev/null; then
  # onnxruntime and onnxruntime-gpu share their files: only one may be installed
  if compgen -G "$STASH/onnxruntime_gpu-*.whl" >/dev/null; then $PY -m pip uninstall -y -q onnxruntime; fi
  $PY -m pip install -q --no-index --no-deps --no-cache-dir --force-reinstall "$STASH"/*.whl \
    || echo "FAILED: installing the carried wheels"
fi
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
$PY -m pip list 2>/dev/null | grep -iE "^(torch|onnx|onnxruntime|onnxruntime-gpu|tensorrt.*|grpcio.*|protobuf|numpy|pandas) " \
  | tee "$OUT/packages.txt"

echo "== pytest: gpu-marked tests, then the backend tests on a GPU host"
timeout 240 $PY -m pytest -p no:cacheprovider -o addopts="" --strict-markers -v -rs \
  -m gpu tests/serving/test_server_engines.py tests/training/test_tensorrt.py \
  tests/training/test_detectors.py
timeout 120 $PY -m pytest -p no:cacheprovider -o addopts="" --strict-markers -v -rs \
  -m "not gpu" tests/serving/test_server_engines.py

echo "== bench.gpu_check"
timeout 300 $PY -m bench.gpu_check --out "$OUT/gpu-check.json"

for backend in cpu cuda; do
  echo "== bench.scorer --backend $backend"
  timeout 150 $PY -m bench.scorer --backend "$backend" --seconds 3 --processes 1 \
    --out "$OUT/scorer-$backend.json"
done
date -u
