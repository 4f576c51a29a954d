#!/usr/bin/env bash
# Fuzz the lwc_runtime C API (tests/fuzz/capi_fuzz.c) against a small host model.
#
#   benchmarks/fuzz_capi.sh [SECONDS] [TSAN_SECONDS]     (defaults: 60, 30)
#
# 1. tests/fuzz/capi_build.py compiles a small two-input model for the host into $WORK and
#    builds the harness with lwc_runtime.cc compiled in: clang -fsanitize=fuzzer,address,
#    undefined (libFuzzer) where clang and libFuzzer are installed (Debian: apt-get install
#    clang libclang-rt-dev), else a seeded random-program driver built with clang or gcc
#    -fsanitize=address,undefined; it runs for SECONDS (libFuzzer corpus: $WORK/corpus);
# 2. the thread driver built with -fsanitize=thread runs for TSAN_SECONDS: 4 threads load
#    and run the model at once (each output compared with a single-threaded run) while
#    each also runs random programs. SECONDS=0 or TSAN_SECONDS=0 skips that part.
# Exit status 0 when neither run reported anything. Environment: WORK (default
# /tmp/lwc_fuzz_capi), PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_FUZZ=${1:-60}
SECONDS_TSAN=${2:-30}
WORK=${WORK:-/tmp/lwc_fuzz_capi}
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p "$WORK/corpus"
export TVM_NUM_THREADS=1

read -r MODEL EXE KIND < <("$PYTHON" tests/fuzz/capi_build.py "$WORK" auto)
export LWC_FUZZ_MODEL="$MODEL"
# leaks are not checked: TVM keeps process-wide registries (loaded modules, functions)
export ASAN_OPTIONS=detect_leaks=0
echo "fuzz_capi: $KIND, ${SECONDS_FUZZ} s"
if [[ "$SECONDS_FUZZ" == 0 ]]; then
  echo "(skipped)" > "$WORK/fuzz.log"
elif [[ $KIND == libfuzzer ]]; then
  nice "$EXE" -max_total_time="$SECONDS_FUZZ" -max_len=512 -len_control=0 -timeout=20 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="$WORK/" "$WORK/corpus" > "$WORK/fuzz.log" 2>&1 || status=$?
else
  nice "$EXE" "$SECONDS_FUZZ" 1 > "$WORK/fuzz.log" 2>&1 || status=$?
fi
status=${status:-0}
tail -12 "$WORK/fuzz.log"

tsan_status=0
if [[ "$SECONDS_TSAN" != 0 ]]; then
  read -r _ TSAN_EXE _ < <("$PYTHON" tests/fuzz/capi_build.py "$WORK" tsan)
  # checked runs only for TSAN_SECONDS, then with random programs between them for at
  # most 20 s: failed loads of foreign libraries stay mapped (inside tvm-ffi's loader) and
  # ThreadSanitizer's memory grows with each (~50 MB/s)
  PROGRAM_SECONDS=$(( SECONDS_TSAN < 20 ? SECONDS_TSAN : 20 ))
  echo "fuzz_capi: ThreadSanitizer, 4 threads, ${SECONDS_TSAN} s + ${PROGRAM_SECONDS} s with random programs"
  { TSAN_OPTIONS="halt_on_error=1 ${TSAN_OPTIONS:-}" nice "$TSAN_EXE" "$SECONDS_TSAN" 4 0 &&
    TSAN_OPTIONS="halt_on_error=1 ${TSAN_OPTIONS:-}" nice "$TSAN_EXE" "$PROGRAM_SECONDS" 4 1
  } > "$WORK/tsan.log" 2>&1 || tsan_status=$?
  tail -40 "$WORK/tsan.log"
fi
echo "fuzz_capi: fuzz exit $status, tsan exit $tsan_status (logs in $WORK)"
[[ $status == 0 && $tsan_status == 0 ]]
