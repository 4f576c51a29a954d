#!/usr/bin/env bash
# Device check for CUDA targets (issue 7): run on a machine WITH an NVIDIA GPU.
#
# For PP-OCRv4 det, rec and PP-OCR cls: compile for target `cuda` (the local GPU, x86-64
# host), verify against onnxruntime on the CPU (fp32: atol/rtol 1e-3), and time the
# untuned artifact vs onnxruntime CPU. Then det in fp16: cosine vs onnxruntime.
# Results go to $OUT (or ./gpu_check_out): one JSON per step plus summary.txt.
#
# Needs: lwc installed in $PYTHON's environment (default .venv/bin/python) with
# rapidocr-onnxruntime (the models), nvcc (CUDA 12/13) on PATH or $CUDA_PATH, nvidia-smi.
# Budget: on an H200 expect ~1-2 min per model to compile (nvcc dominates), seconds to run.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
log() { echo "$*" | tee -a "$SUMMARY"; }

log "== environment"
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader 2>&1 | tee -a "$SUMMARY"
(command -v nvcc && nvcc --version | tail -2) 2>&1 | tee -a "$SUMMARY"
"$PY" -c "import tvm, lwc.cuda as c; print('tvm', tvm.__version__, 'gpu_available', c.gpu_available(), 'toolkit', c.find_toolkit())" 2>&1 | tee -a "$SUMMARY"

MODELS=$("$PY" -c "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('rapidocr_onnxruntime').origin).parent / 'models')")
declare -A FILE=([cls]=ch_ppocr_mobile_v2.0_cls_infer.onnx [rec]=ch_PP-OCRv4_rec_infer.onnx [det]=ch_PP-OCRv4_det_infer.onnx)
declare -A SHAPE=([cls]=x:1,3,48,192 [rec]=x:1,3,48,320 [det]=x:1,3,640,640)

for key in cls rec det; do
  model="$MODELS/${FILE[$key]}"
  log "== $key: compile (cuda, fp32)"
  start=$(date +%s)
  "$PY" -m lwc compile "$model" --target cuda --input-shape "${SHAPE[$key]}" -o "$OUT/$key-cuda.so" -q 2>&1 | tee -a "$SUMMARY"
  log "compile wall: $(( $(date +%s) - start )) s"
  log "== $key: verify vs onnxruntime CPU (atol/rtol 1e-3)"
  "$PY" -m lwc verify "$model" "$OUT/$key-cuda.so" --atol 1e-3 --rtol 1e-3 --json > "$OUT/$key-verify.json" 2>&1
  "$PY" - "$OUT/$key-verify.json" <<'PYEOF' 2>&1 | tee -a "$SUMMARY"
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception:
    print(open(sys.argv[1]).read()[-2000:]); sys.exit()
for o in r.get("outputs", []):
    print(f"  {o['name']}: max_abs {o['max_abs']:.3g} cosine {o['cosine']:.6f} {'ok' if o['ok'] else 'MISMATCH'}")
print("  verify:", "PASS" if r.get("ok") else "FAIL")
PYEOF
  log "== $key: latency (untuned) vs onnxruntime CPU"
  "$PY" - "$model" "$OUT/$key-cuda.so" <<'PYEOF' 2>&1 | tee -a "$SUMMARY"
import sys, time, os
import numpy as np
import onnxruntime as ort
from lwc import artifact as art
model, so = sys.argv[1], sys.argv[2]
a = art.load(so)
feed = a.full_inputs(None, 0)
_, gpu_ms = a.timed_run(feed, repeat=100)   # includes host<->device copies
sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
sess.run(None, feed)
t = time.perf_counter()
for _ in range(20):
    sess.run(None, feed)
cpu_ms = (time.perf_counter() - t) * 1e3 / 20
print(f"  lwc cuda untuned: {gpu_ms:.3f} ms/run   onnxruntime CPU ({os.cpu_count()} cores): {cpu_ms:.3f} ms/run")
PYEOF
done

log "== det fp16 (mixed precision): compile, cosine vs onnxruntime fp32"
"$PY" -m lwc compile "$MODELS/${FILE[det]}" --target cuda --precision fp16 --input-shape "${SHAPE[det]}" -o "$OUT/det-cuda-fp16.so" -q 2>&1 | tee -a "$SUMMARY"
"$PY" -m lwc verify "$MODELS/${FILE[det]}" "$OUT/det-cuda-fp16.so" --atol 5e-2 --rtol 5e-2 --json > "$OUT/det-fp16-verify.json" 2>&1
"$PY" -c "
import json; r = json.load(open('$OUT/det-fp16-verify.json'))
for o in r['outputs']: print(f\"  fp16 det {o['name']}: max_abs {o['max_abs']:.3g} cosine {o['cosine']:.6f}\")
" 2>&1 | tee -a "$SUMMARY"

log "== GPU tests"
"$PY" -m pytest -q -m gpu tests/test_cuda.py 2>&1 | tail -5 | tee -a "$SUMMARY"
log "done; results in $OUT"
