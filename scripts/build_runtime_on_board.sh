#!/usr/bin/env bash
# Build a bundle's runtime libraries from the pinned sources with the board's own compiler
# and C library, and put them into the bundle's lib/ (docs/boards.md, "When a wheel file
# does not fit the board").
#
#   scripts/build_runtime_on_board.sh BUNDLE_DIR            # on the board
#   TVM_SRC=~/tvm scripts/build_runtime_on_board.sh deploy/det   # with an existing checkout
#   USE_CUDA=ON scripts/build_runtime_on_board.sh deploy/det     # Jetson: + libtvm_runtime CUDA
#
# Run it on the board, or in a container / chroot of the board's OS (same glibc and
# libstdc++: e.g. `docker run --platform linux/arm64 -v $PWD:/w ubuntu:18.04` for JetPack
# 4.6, nvcr.io/nvidia/l4t-jetpack for JetPack 5/6, a Raspberry Pi OS arm64 chroot for a Pi).
# Whatever it builds needs only that OS's glibc and libstdc++, so `lwc audit BUNDLE_DIR`
# passes the glibc/GLIBCXX checks afterwards. Needs git, cmake >= 3.18, a C++17 g++, and
# network access to github.com (or TVM_SRC).
#
# What it does:
#   1. reads the apache-tvm / apache-tvm-ffi versions from the bundle's manifest;
#   2. clones apache/tvm at tag v<version without .postN> with its submodules (tvm-ffi is
#      3rdparty/tvm-ffi) unless TVM_SRC is given, and builds the tvm_runtime target
#      (USE_LLVM=OFF: the board never compiles; USE_CUDA from the environment);
#   3. builds liblwc_runtime.so from lwc's compiler/runtime/ with the same flags as
#      lwc.bundle.build_runtime_library;
#   4. copies libtvm_runtime.so, libtvm_ffi.so and liblwc_runtime.so into BUNDLE_DIR/lib/
#      (the old ones are kept as lib/*.wheel) and shows what they load (ldd).
set -euo pipefail

bundle=${1:?usage: $0 BUNDLE_DIR}
bundle=$(cd "$bundle" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
runtime_src=${LWC_RUNTIME_SRC:-$here/../compiler/runtime}
jobs=${JOBS:-$(nproc)}
work=${WORK_DIR:-$HOME/.cache/lwc-board-build}

manifest=$(ls "$bundle"/*.json | head -n 1)
version() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['versions'][sys.argv[2]])" "$manifest" "$1"; }
tvm_version=$(version apache-tvm)
ffi_version=$(version apache-tvm-ffi)
lwc_version=$(version lwc)
tag=v${tvm_version%%.post*}
echo "bundle $bundle: apache-tvm $tvm_version (tag $tag), apache-tvm-ffi $ffi_version"

src=${TVM_SRC:-$work/tvm-$tag}
if [ ! -d "$src/.git" ] && [ -z "${TVM_SRC:-}" ]; then
  mkdir -p "$work"
  git clone --depth 1 --branch "$tag" --recursive --shallow-submodules \
    https://github.com/apache/tvm "$src"
fi
ffi=$src/3rdparty/tvm-ffi
[ -d "$ffi/include" ] || { echo "no tvm-ffi sources in $ffi (git submodule update --init --recursive)" >&2; exit 1; }

build=$src/build-board
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DUSE_LLVM=OFF \
  -DUSE_CUDA="${USE_CUDA:-OFF}" -DUSE_LIBBACKTRACE=OFF -DUSE_RPC=OFF
cmake --build "$build" --target tvm_runtime -j "$jobs"
find_lib() { find "$build" -name "$1" -type f | head -n 1; }
tvm_runtime=$(find_lib libtvm_runtime.so)
tvm_ffi=$(find_lib libtvm_ffi.so)
[ -n "$tvm_runtime" ] && [ -n "$tvm_ffi" ] || { echo "build produced no libtvm_runtime.so/libtvm_ffi.so" >&2; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cp "$tvm_runtime" "$tvm_ffi" "$out/"
${CXX:-g++} -std=c++17 -O2 -fPIC -shared -fvisibility=hidden \
  -DLWC_VERSION="\"$lwc_version\"" -DLWC_TVM_VERSION="\"$tvm_version\"" \
  -DLWC_TVM_FFI_VERSION="\"$ffi_version\"" \
  -I "$runtime_src" -I "$ffi/include" -I "$ffi/3rdparty/dlpack/include" \
  "$runtime_src/lwc_runtime.cc" -o "$out/liblwc_runtime.so" \
  -Wl,--version-script="$runtime_src/lwc_runtime.map" \
  -L "$out" -Wl,--no-as-needed -ltvm_runtime -ltvm_ffi -Wl,--as-needed -Wl,-rpath,'$ORIGIN'

for lib in libtvm_runtime.so libtvm_ffi.so liblwc_runtime.so; do
  [ -f "$bundle/lib/$lib" ] && [ ! -f "$bundle/lib/$lib.wheel" ] && mv "$bundle/lib/$lib" "$bundle/lib/$lib.wheel"
  cp "$out/$lib" "$bundle/lib/$lib"
done
echo "replaced $bundle/lib/{libtvm_runtime,libtvm_ffi,liblwc_runtime}.so (old ones: *.wheel)"

echo "what the libraries load (no 'not found' may appear):"
ldd "$bundle/lib/liblwc_runtime.so"
