#!/usr/bin/env bash
# The main job on a bundled real model: compile PP-OCRv4 text detection for arm64 and
# verify the artifact under qemu-aarch64 against onnxruntime.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
MODEL=$(.venv/bin/python -m lwc.models det)
mkdir -p out
.venv/bin/lwc compile "$MODEL" --target arm64 --input-shape x:1,3,640,640 -o out/det.so
.venv/bin/lwc verify "$MODEL" out/det.so
