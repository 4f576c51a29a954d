#!/usr/bin/env bash
# Set up lwc on a fresh Debian/Ubuntu machine (idempotent):
#   - apt: the aarch64 cross compiler and qemu-user (to run arm64 artifacts on x86)
#   - .venv with lwc (editable) and its test, cuda and torch extras
#   - the real models used by the demo and tests (rapidocr-onnxruntime ships PP-OCR ONNX
#     models; installed with --no-deps, we only need its model files)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v aarch64-linux-gnu-g++ >/dev/null || need_apt+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || need_apt+=(qemu-user)
command -v g++ >/dev/null || need_apt+=(g++)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${need_apt[*]} with apt-get"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}"
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
log=.venv/setup-pip.log
echo "setup: installing Python packages into .venv (log: $log)"
{
  .venv/bin/python -m pip install --upgrade pip
  .venv/bin/python -m pip install -e ".[test,cuda,torch]"  # torch: CPU wheel, ~40 s (tests/test_finetune.py)
  .venv/bin/python -m pip install --no-deps "rapidocr-onnxruntime==1.4.4"
} > "$log" 2>&1 || { tail -n 30 "$log"; echo "setup: pip failed (full log: $log)"; exit 1; }
echo "setup: done ($(.venv/bin/lwc --version)); bundled real models:"
.venv/bin/python -m lwc.models
