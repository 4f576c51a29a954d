"""Build tests/fuzz/capi_fuzz.c with lwc_runtime.cc compiled in, under sanitizers.

Used by benchmarks/fuzz_capi.sh (``python tests/fuzz/capi_build.py WORK KIND`` prints the
executable's path) and tests/test_fuzz.py. Kinds:

- ``libfuzzer``: clang ``-fsanitize=fuzzer,address,undefined`` (needs clang and
  libclang-rt-dev: libFuzzer);
- ``standalone``: seeded random programs, ``-fsanitize=address,undefined`` with clang or gcc;
- ``tsan``: the thread driver, ``-fsanitize=thread``.

The model is a small two-input, two-output host artifact compiled once into WORK.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RUNTIME = ROOT / "compiler" / "runtime"
SAN = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g", "-O1"]
TSAN = ["-fsanitize=thread", "-g", "-O1"]


def clang() -> str | None:
    return shutil.which("clang") or shutil.which("clang-14")


def have_libfuzzer(work: Path) -> bool:
    cc = clang()
    if cc is None:
        return False
    probe = work / "probe.c"
    probe.write_text("int LLVMFuzzerTestOneInput(const char* d, unsigned long n) { return 0; }\n")
    proc = subprocess.run([cc, "-fsanitize=fuzzer", str(probe), "-o", str(work / "probe")],
                          capture_output=True, check=False)
    return proc.returncode == 0


def make_model(work: Path) -> Path:
    """work/model.so (+ model.json): a[4,8] @ w + b -> relu, sigmoid; compiled once."""
    model = work / "model.so"
    if model.is_file() and model.with_suffix(".json").is_file():
        return model
    import numpy as np
    import onnx
    from lwc import driver
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.linspace(-1, 1, 48, dtype=np.float32).reshape(8, 6), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["s"]),
         helper.make_node("Relu", ["s"], ["y"]), helper.make_node("Sigmoid", ["m"], ["z"])],
        "two_io",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4, 8]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 6]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [4, 6])],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), work / "model.onnx")
    driver.compile(str(work / "model.onnx"), "host", use_tuning_logs=False).export(model)
    return model


def _flags() -> tuple[list[str], list[str], list[str]]:
    """(defines, includes, link flags) as lwc.bundle builds liblwc_runtime.so."""
    from lwc import bundle, tvm_compat

    rt = bundle.runtime_dir(platform.machine())
    v = tvm_compat.versions()
    defines = [f'-DLWC_VERSION="{v["lwc"]}"', f'-DLWC_TVM_VERSION="{v["apache-tvm"]}"',
               f'-DLWC_TVM_FFI_VERSION="{v["apache-tvm-ffi"]}"']
    includes = ["-I", str(RUNTIME), "-I", str(rt.include)]
    libs = [*[f"-L{d}" for d in rt.lib_dirs], *[f"-Wl,-rpath,{d}" for d in rt.lib_dirs],
            "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi", "-lpthread"]
    return defines, includes, libs


def cached_build(kind: str) -> Path:
    """:func:`build` into lwc's cache folder, keyed by the sources, flags and compiler:
    a second run (the test's) reuses the executable."""
    import hashlib
    import json

    from lwc import bundle

    h = hashlib.sha256()
    for src in (HERE / "capi_fuzz.c", RUNTIME / "lwc_runtime.cc", RUNTIME / "lwc_runtime.h"):
        h.update(src.read_bytes())
    h.update(json.dumps([kind, clang(), _flags(), SAN, TSAN]).encode())
    folder = bundle._cache_root() / "capi_fuzz" / f"{kind}-{h.hexdigest()[:16]}"
    exe = folder / f"capi_{kind}"
    return exe if exe.is_file() else build(folder, kind)


def build(work: Path, kind: str) -> Path:
    """Compile and link the harness of ``kind`` in ``work``; returns the executable.

    Raises:
        RuntimeError: no compiler for that kind, or a compile/link error (its output).
    """
    work.mkdir(parents=True, exist_ok=True)
    cc = clang()
    if kind == "libfuzzer":
        if not have_libfuzzer(work):
            raise RuntimeError("clang with libFuzzer not found (apt-get install clang libclang-rt-dev)")
        flags, cflags, lflags = SAN + ["-fsanitize=fuzzer-no-link"], SAN + ["-fsanitize=fuzzer"], SAN + ["-fsanitize=fuzzer"]
        define = []
    else:
        cc = cc or shutil.which("gcc")
        if cc is None:
            raise RuntimeError("neither clang nor gcc found")
        sanitizers = TSAN if kind == "tsan" else SAN
        flags = cflags = lflags = sanitizers
        define = ["-DLWC_FUZZ_THREADS"] if kind == "tsan" else ["-DLWC_FUZZ_STANDALONE"]
    cxx = cc.replace("clang", "clang++") if "clang" in cc else "g++"
    defines, includes, libs = _flags()
    rt_obj, h_obj, exe = work / f"rt_{kind}.o", work / f"h_{kind}.o", work / f"capi_{kind}"
    steps = [
        [cxx, "-std=c++17", *flags, *defines, *includes, "-c", str(RUNTIME / "lwc_runtime.cc"), "-o", str(rt_obj)],
        [cc, "-std=c99", *cflags, *define, "-I", str(RUNTIME), "-c", str(HERE / "capi_fuzz.c"), "-o", str(h_obj)],
        [cxx, *lflags, str(h_obj), str(rt_obj), *libs, "-o", str(exe)],
    ]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:3])} ... failed:\n{proc.stderr[-3000:]}")
    return exe


def main(argv: list[str]) -> int:
    """capi_build.py WORK KIND: prints 'MODEL EXE' (KIND: libfuzzer, standalone, tsan, auto)."""
    work, kind = Path(argv[0]), argv[1]
    work.mkdir(parents=True, exist_ok=True)
    if kind == "auto":
        kind = "libfuzzer" if have_libfuzzer(work) else "standalone"
    model = make_model(work)
    print(model, build(work, kind), kind)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
