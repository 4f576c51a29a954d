#!/usr/bin/env bash
# Issue 6 closing-note measurements on host (x86), in one go. Needs an idle machine: it
# refuses to start while another `lwc tune` runs (timings and tuning would both be wrong).
#
#   (b) mlp: MLP 768->3072->768, 1 and 16 rows, pruned to 90% / 80% 1x4 blocks:
#       lwc BSR (--sparsity force), lwc auto (measured against the tuned dense kernel),
#       lwc tuned dense (--sparsity off with the unpruned MLP's tuning log), each against
#       onnxruntime on the same pruned model (lwc bench --vs-onnxruntime); 4 min of tuning
#       per row count (records are per workload, so the unpruned model's log serves the
#       pruned one's dense kernels).
#   (a) cls: PP-OCR mobile cls (x:1,3,48,192) pruned 30% by channel vs dense: FLOPs (compile
#       manifest, RemoveZeroChannels) and tuned latency; the pruned model is tuned 15 min,
#       the dense one uses tuning_logs/fcdf8dabbb44-host-znver4 (35 min, 1381 trials).
#
#   arm64: the pruned cls and the 90% MLPs compiled for arm64 and verified under qemu.
#
# Usage: bash benchmarks/sparsity/measure.sh [mlp|cls|arm64|all]   (default all; ~35 min)
#   MLP_BUDGET (default 4m per row count), CLS_BUDGET (default 15m): tuning time budgets;
#   ROWS (default "1 16"): the MLP row counts; SKIP_TUNE=1 reuses the tune_*.json of an
#   earlier run (tuning done, only compile/verify/bench again)
# Results: build/issue6/*.json and the summary printed at the end (summarize.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
PART=${1:-all}
W=${W:-build/issue6}
LWC=.venv/bin/lwc
PY=.venv/bin/python
if [ "$PART" != arm64 ] && pgrep -f "lwc tune" >/dev/null; then
  echo "measure.sh: another 'lwc tune' is running; run this on an idle machine" >&2
  exit 1
fi
[ -f "$W/mlp_r1_b90.onnx" ] && [ -f "$W/cls_pruned30.onnx" ] || $PY benchmarks/sparsity/make_models.py "$W"
log_dir() { $PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["log_dir"])' "$1"; }

if [ "$PART" = mlp ] || [ "$PART" = all ]; then
  for rows in ${ROWS:-1 16}; do
    [ -n "${SKIP_TUNE:-}" ] && [ -s "$W/tune_mlp_r$rows.json" ] || $LWC tune "$W/mlp_r$rows.onnx" --target host --trials 100000 --time-budget "${MLP_BUDGET:-4m}" --json \
      > "$W/tune_mlp_r$rows.json"
    LOG=$(log_dir "$W/tune_mlp_r$rows.json")
    for pct in 90 80; do
      m="$W/mlp_r${rows}_b$pct"
      $LWC compile "$m.onnx" --sparsity force -o "${m}_bsr.so" --json > "${m}_bsr.compile.json"
      $LWC compile "$m.onnx" --sparsity auto --tuning-log "$LOG" -o "${m}_auto.so" --json > "${m}_auto.compile.json"
      $LWC compile "$m.onnx" --sparsity off --tuning-log "$LOG" -o "${m}_dense.so" --json > "${m}_dense.compile.json"
      for kind in bsr auto dense; do
        $LWC verify "$m.onnx" "${m}_$kind.so" > "${m}_$kind.verify.txt"
        $LWC bench "${m}_$kind.so" --vs-onnxruntime "$m.onnx" --repeat 100 --json > "${m}_$kind.bench.json"
      done
    done
  done
fi

if [ "$PART" = cls ] || [ "$PART" = all ]; then
  CLS=$($PY -c 'from lwc import models; print(models.ppocr_model("cls"))')
  [ -n "${SKIP_TUNE:-}" ] && [ -s "$W/tune_cls_pruned30.json" ] || $LWC tune "$W/cls_pruned30.onnx" --target host --input-shape x:1,3,48,192 --trials 100000 \
    --time-budget "${CLS_BUDGET:-15m}" --json > "$W/tune_cls_pruned30.json"
  $LWC compile "$CLS" --input-shape x:1,3,48,192 -o "$W/cls_dense.so" --json > "$W/cls_dense.compile.json"
  $LWC compile "$W/cls_pruned30.onnx" --input-shape x:1,3,48,192 -o "$W/cls_pruned30.so" --json \
    > "$W/cls_pruned30.compile.json"
  $LWC verify "$W/cls_pruned30.onnx" "$W/cls_pruned30.so" > "$W/cls_pruned30.verify.txt"
  $LWC bench "$W/cls_dense.so" --vs-onnxruntime "$CLS" --repeat 300 --json > "$W/cls_dense.bench.json"
  $LWC bench "$W/cls_pruned30.so" --vs-onnxruntime "$W/cls_pruned30.onnx" --repeat 300 --json \
    > "$W/cls_pruned30.bench.json"
fi
if [ "$PART" = arm64 ] || [ "$PART" = all ]; then  # correctness only: qemu time is not board time
  for m in cls_pruned30 mlp_r1_b90 mlp_r16_b90; do
    shape=(); [ "$m" = cls_pruned30 ] && shape=(--input-shape x:1,3,48,192)
    $LWC compile "$W/$m.onnx" -t arm64 "${shape[@]}" -o "$W/${m}_arm64.so" -q
    $LWC verify "$W/$m.onnx" "$W/${m}_arm64.so" | tee "$W/${m}_arm64.verify.txt" | tail -n 1
  done
fi
$PY benchmarks/sparsity/summarize.py "$W"
