"""Deployable bundles: the C API, the example program, the Python loader (issue 5).

- The C header compiles as strict C99 and as C++.
- A host bundle: layout, the example built with make and with CMake, run without
  LD_LIBRARY_PATH, outputs equal to ``lwc.artifact.load(...).run(...)``; the Python loader
  gives the same; bad calls to the C API return error codes with messages (the driver is
  tests/deploy_bad_calls.c; set LWC_TEST_VALGRIND=1 to run it under valgrind as well).
- Case D1 and the arm64 bundles (PP-OCR cls and PP-OCRv4 det): built with ``lwc compile
  --bundle``, the example cross-compiled with its Makefile, run under
  ``qemu-aarch64 -L /usr/aarch64-linux-gnu`` on an input file, outputs equal to the host
  artifact within 1e-5.

Needs gcc/g++; the arm64 tests need g++-aarch64-linux-gnu, qemu-user and (first run only)
network access for the aarch64 TVM wheels.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lwc import artifact, cli
from lwc.runtime import lwc_runtime

HERE = Path(__file__).resolve().parent
RUNTIME = HERE.parent / "compiler" / "runtime"
SYSROOT = "/usr/aarch64-linux-gnu"
TOL = 1e-5  # fp32, arm64 under qemu vs host x86-64

needs_arm64 = pytest.mark.skipif(
    shutil.which("qemu-aarch64") is None or shutil.which("aarch64-linux-gnu-gcc") is None,
    reason="needs qemu-user and gcc-aarch64-linux-gnu",
)


def _rapidocr_models() -> Path | None:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")  # importing it needs cv2
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _lwc(*argv: str) -> str:
    """Run the lwc CLI in-process; return stdout, fail the test on a non-zero status."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in argv])
    assert rc == 0, f"lwc {' '.join(map(str, argv))} -> {rc}: {err.getvalue()}"
    return out.getvalue()


def _run(cmd, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _env_without_ld_path() -> dict:
    env = dict(os.environ)
    env.pop("LD_LIBRARY_PATH", None)
    return env


def _two_io_model() -> onnx.ModelProto:
    """x:[1,3,8,8], y:[1,4,8,8] -> sum = relu(conv(x)) + y [1,4,8,8], tot = sum(sum) []."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Add", ["r", "y"], ["sum"]),
        helper.make_node("ReduceSum", ["sum"], ["tot"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "two_io",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, [1, 4, 8, 8]),
         helper.make_tensor_value_info("tot", TensorProto.FLOAT, [])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _inputs(specs, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s["name"]: rng.standard_normal(s["shape"], dtype=np.float32) for s in specs}


def _write_inputs(folder: Path, inputs: dict[str, np.ndarray]) -> list[Path]:
    paths = []
    for name, array in inputs.items():
        path = folder / f"{name}.bin"
        np.ascontiguousarray(array).tofile(path)
        paths.append(path)
    return paths


def _read_outputs(first: Path, specs: list[dict]) -> list[np.ndarray]:
    paths = [first] + [Path(f"{first}.{i}") for i in range(1, len(specs))]
    return [np.fromfile(p, dtype=s["dtype"]).reshape(s["shape"]) for p, s in zip(paths, specs)]


def _assert_close(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=0, atol=TOL)


@pytest.fixture(scope="module")
def two_io_onnx(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "two_io.onnx"
    onnx.save(_two_io_model(), path)
    return path


@pytest.fixture(scope="module")
def host_bundle(two_io_onnx, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("host") / "deploy" / "two"
    printed = _lwc("compile", two_io_onnx, "--bundle", "-o", out)
    assert f"wrote bundle {out}/" in printed and " MB" in printed
    return out


# --------------------------------------------------------------------------- header


@pytest.mark.parametrize("compiler,flags", [
    ("gcc", ["-x", "c", "-std=c99", "-pedantic-errors"]),
    ("g++", ["-x", "c++", "-std=c++11"]),
])
def test_header_compiles_as_strict_c99_and_cpp(compiler, flags, tmp_path):
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} not installed")
    _run([compiler, *flags, "-Wall", "-Wextra", "-Werror", "-fsyntax-only",
          "-I", RUNTIME, RUNTIME / "example" / "run_model.c"])


# --------------------------------------------------------------------------- host bundle


def test_host_bundle_layout(host_bundle):
    for rel in ("two.so", "two.json", "lib/libtvm_runtime.so", "lib/libtvm_ffi.so",
                "lib/liblwc_runtime.so", "include/lwc_runtime.h", "example/run_model.c",
                "example/Makefile", "example/CMakeLists.txt", "lwc_runtime.py", "README.md"):
        assert (host_bundle / rel).is_file(), rel
    assert not list(host_bundle.parent.glob(".two.*")), "staging folder left behind"


def test_host_example_make_and_cmake_match_artifact_run(host_bundle, tmp_path):
    example = host_bundle / "example"
    _run(["make", "-C", example])
    build = tmp_path / "cmake-build"
    if shutil.which("cmake"):
        _run(["cmake", "-S", example, "-B", build, "-DLWC_BUNDLE=" + str(host_bundle)])
        _run(["cmake", "--build", build])
    manifest = json.loads((host_bundle / "two.json").read_text())
    inputs = _inputs(manifest["inputs"])
    in_files = _write_inputs(tmp_path, inputs)
    want = artifact.load(host_bundle / "two.so").run(inputs)
    exes = [example / "run_model"] + ([build / "run_model"] if shutil.which("cmake") else [])
    for i, exe in enumerate(exes):
        out = tmp_path / f"out{i}.bin"
        proc = _run([exe, host_bundle / "two.so", *in_files, out], env=_env_without_ld_path())
        assert "output 1 tot float32 []" in proc.stdout
        _assert_close(_read_outputs(out, manifest["outputs"]), want)


def test_python_loader_matches_artifact_run(host_bundle):
    manifest = json.loads((host_bundle / "two.json").read_text())
    inputs = _inputs(manifest["inputs"], seed=3)
    model = lwc_runtime.load(host_bundle / "two.so")
    assert [i.name for i in model.inputs] == ["x", "y"]
    assert model.inputs[1] == lwc_runtime.TensorInfo("y", "float32", (1, 4, 8, 8))
    assert model.outputs[1].shape == ()
    got = model(inputs["x"], y=inputs["y"])
    assert isinstance(got, tuple) and len(got) == 2
    _assert_close(list(got), artifact.load(host_bundle / "two.so").run(inputs))
    assert "apache-tvm-ffi" in lwc_runtime.runtime_version()


def test_bundled_python_loader_needs_no_lwc(host_bundle):
    """`import lwc_runtime` in the bundle folder: numpy + the bundle's lib/, not lwc."""
    script = (
        "import sys, numpy as np, lwc_runtime\n"
        "m = lwc_runtime.load('two.so')\n"
        "s, t = m(np.ones((1, 3, 8, 8), np.float32), np.ones((1, 4, 8, 8), np.float32))\n"
        "assert 'lwc' not in sys.modules and 'tvm' not in sys.modules, sorted(sys.modules)\n"
        "print(lwc_runtime.library_path(), s.shape, float(t))\n"
    )
    proc = _run([sys.executable, "-c", script], cwd=host_bundle, env=_env_without_ld_path())
    assert proc.stdout.startswith(str(host_bundle.resolve() / "lib" / "liblwc_runtime.so"))


def test_python_loader_errors(host_bundle, tmp_path):
    model = lwc_runtime.load(host_bundle / "two.so")
    x = np.zeros((1, 3, 8, 8), np.float32)
    y = np.zeros((1, 4, 8, 8), np.float32)
    cases = [
        (lambda: model(x[:, :2], y), "LWC_ERR_SHAPE_MISMATCH", "compiled for [1, 3, 8, 8]"),
        (lambda: model(x.astype(np.int32), y), "LWC_ERR_DTYPE_MISMATCH", "got int32"),
        (lambda: model(x), "LWC_ERR_NOT_READY", "y"),
        (lambda: model(x, z=y), "LWC_ERR_INVALID_ARGUMENT", "no input named 'z'"),
        (lambda: lwc_runtime.load(tmp_path / "no.so"), "LWC_ERR_FILE_NOT_FOUND", "no.so"),
    ]
    for call, status, text in cases:
        with pytest.raises(lwc_runtime.LwcRuntimeError) as info:
            call()
        assert info.value.status == status and text in info.value.message, str(info.value)
    model.close()
    with pytest.raises(lwc_runtime.LwcRuntimeError, match="closed"):
        model(x, y)


def _broken_variants(bundle: Path, folder: Path) -> list[Path]:
    """Copies of the bundle's model whose manifests fail each load-time check."""
    so, manifest = bundle / "two.so", json.loads((bundle / "two.json").read_text())

    def variant(name: str, edit=None, text: str | None = None, so_bytes: bytes | None = None):
        path = folder / f"{name}.so"
        if so_bytes is None:
            shutil.copy(so, path)
        else:
            path.write_bytes(so_bytes)
        if text is not None:
            path.with_suffix(".json").write_text(text)
        elif edit is not None:
            m = json.loads(json.dumps(manifest))
            edit(m)
            path.with_suffix(".json").write_text(json.dumps(m))
        return path

    other_arch = "aarch64" if platform.machine() != "aarch64" else "x86_64"
    # A feature of the other architecture: never in this CPU's flags.
    feature = "i8mm" if platform.machine() == "x86_64" else "avx512"
    missing_manifest = variant("no_manifest")
    return [
        folder / "missing.so",
        missing_manifest,
        variant("malformed", text='{"format": 1, "inputs": ['),
        variant("version", lambda m: m["versions"].update({"apache-tvm-ffi": "0.1.15.post2"})),
        variant("format", lambda m: m.update(format=99)),
        variant("arch", lambda m: m["target"].update(arch=other_arch)),
        variant("feature", lambda m: m["target"].update(features=[feature])),
        variant("not_elf", lambda m: None, so_bytes=b"not a shared library\n"),
        variant("truncated", lambda m: None, so_bytes=so.read_bytes()[: so.stat().st_size // 2]),
        variant("shape_overflow", lambda m: m["inputs"][0].update(shape=[2**53, 2**53, 1, 1])),
        variant("huge_shape", lambda m: m["inputs"][0].update(shape=[1, 3, 8, 2**40])),
    ]


def test_c_api_bad_calls(two_io_onnx, tmp_path):
    # x86-64-v3 (AVX2) rather than this CPU: valgrind 3.19 cannot decode AVX-512.
    target = "x86_64" if platform.machine() == "x86_64" else "host"
    bundle = tmp_path / "two"
    _lwc("compile", two_io_onnx, "--target", target, "--bundle", "-o", bundle)
    exe = tmp_path / "deploy_bad_calls"
    lib = bundle / "lib"
    _run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-I", bundle / "include",
          HERE / "deploy_bad_calls.c", "-o", exe, f"-L{lib}", f"-Wl,-rpath,{lib}",
          "-llwc_runtime"])
    args = [bundle / "two.so", *_broken_variants(bundle, tmp_path)]
    env = _env_without_ld_path()
    cmd = [exe, *args]
    if os.environ.get("LWC_TEST_VALGRIND"):
        cmd = ["valgrind", "--error-exitcode=99", "--leak-check=full",
               "--errors-for-leak-kinds=definite", *cmd]
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = dict(ln.split(" ", 1) for ln in proc.stdout.splitlines() if " " in ln)
    assert lines["failures"] == "0"
    assert "0.1.15.post2" in lines["load_version_mismatch"]
    assert "which this CPU lacks" in lines["load_missing_feature"]
    assert "compiled for [1, 3, 8, 8]" in lines["set_input_wrong_shape"]
    assert "not found" in lines["load_missing"]
    assert "truncated?" in lines["load_truncated"]
    assert "not live" in lines["free_twice"]


def test_bundle_refuses_gpu_targets_and_foreign_folders(two_io_onnx, tmp_path):
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert cli.main(["compile", str(two_io_onnx), "--target", "jetson-orin-nano", "--bundle",
                         "-o", str(tmp_path / "gpu")]) == 2
    assert "--bundle makes CPU bundles" in err.getvalue()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with contextlib.redirect_stderr(io.StringIO()) as err:
        argv = ["compile", str(two_io_onnx), "--bundle", "-o", str(tmp_path / "mine")]
        assert cli.main(argv) == 2
    assert "not an lwc bundle" in err.getvalue()
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# --------------------------------------------------------------------------- arm64


def _arm64_bundle_run(onnx_path: Path, shape_flags: list[str], out: Path, tmp: Path):
    """Bundle for arm64, cross-build the example, run it under qemu.

    Returns (outputs, inputs, what ``lwc compile`` printed)."""
    printed = _lwc("compile", onnx_path, "--target", "arm64", *shape_flags, "--bundle", "-o", out)
    _run(["make", "-C", out / "example", "CC=aarch64-linux-gnu-gcc"])
    manifest = json.loads((out / f"{out.name}.json").read_text())
    inputs = _inputs(manifest["inputs"])
    in_files = _write_inputs(tmp, inputs)
    result = tmp / "output.bin"
    _run(["qemu-aarch64", "-L", SYSROOT, "./run_model", f"../{out.name}.so", *in_files,
          result], cwd=out / "example", env=_env_without_ld_path(), timeout=600)
    return _read_outputs(result, manifest["outputs"]), inputs, printed


def _host_run(onnx_path: Path, shape_flags: list[str], out: Path, inputs) -> list[np.ndarray]:
    _lwc("compile", onnx_path, *shape_flags, "-o", out)
    return artifact.load(out).run(inputs)


@needs_arm64
@pytest.mark.qemu
def test_case_d1_c_example_on_arm64_matches_python_path(two_io_onnx, tmp_path):
    """D1: header + example load the artifact, set inputs, run, read outputs (arm64, qemu)."""
    got, inputs, _ = _arm64_bundle_run(two_io_onnx, [], tmp_path / "deploy" / "two", tmp_path)
    _assert_close(got, _host_run(two_io_onnx, [], tmp_path / "host" / "two.so", inputs))

    # The same example through CMake with the cross compiler.
    bundle = tmp_path / "deploy" / "two"
    build = tmp_path / "cmake-arm64"
    if shutil.which("cmake"):
        _run(["cmake", "-S", bundle / "example", "-B", build, "-DCMAKE_SYSTEM_NAME=Linux",
              "-DCMAKE_SYSTEM_PROCESSOR=aarch64", "-DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc"])
        _run(["cmake", "--build", build])
        out = tmp_path / "cmake-out.bin"
        _run(["qemu-aarch64", "-L", SYSROOT, build / "run_model", bundle / "two.so",
              *_write_inputs(tmp_path, inputs), out], env=_env_without_ld_path())
        specs = json.loads((bundle / "two.json").read_text())["outputs"]
        _assert_close(_read_outputs(out, specs), got)


@needs_arm64
@pytest.mark.qemu
def test_arm64_runtime_refuses_missing_cpu_feature(two_io_onnx, tmp_path):
    """F4 on the board side: a model using dotprod on a CPU without it is refused."""
    bundle = tmp_path / "two"
    _lwc("compile", two_io_onnx, "--target", "arm64", "--bundle", "-o", bundle)
    _run(["make", "-C", bundle / "example", "CC=aarch64-linux-gnu-gcc"])
    manifest = json.loads((bundle / "two.json").read_text())
    manifest["target"]["features"] = ["neon", "dotprod"]
    (bundle / "two.json").write_text(json.dumps(manifest))
    in_files = _write_inputs(tmp_path, _inputs(manifest["inputs"]))
    env = dict(_env_without_ld_path(), LWC_CPU_FEATURES="neon")
    cmd = ["qemu-aarch64", "-L", SYSROOT, bundle / "example" / "run_model", bundle / "two.so",
           *in_files, tmp_path / "o.bin"]
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 1
    assert "LWC_ERR_UNSUPPORTED" in proc.stderr and "dotprod" in proc.stderr, proc.stderr


#: cls through the bundle's C program under qemu; det's arm64 artifact is verified under qemu
#: by the README's main job (scripts/demo.sh) and tests/test_models.py (det-arm64), and its
#: bundle run took 80 s of the suite
PPOCR = [
    ("cls", "ch_ppocr_mobile_v2.0_cls_infer.onnx", "x:1,3,48,192"),
]


@needs_arm64
@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.parametrize("name,file,shape", PPOCR, ids=[p[0] for p in PPOCR])
def test_ppocr_arm64_bundle_matches_host(name, file, shape, tmp_path, request):
    models = _rapidocr_models()
    if models is None or not (models / file).is_file():
        pytest.skip("rapidocr-onnxruntime not installed (pip install --no-deps ...)")
    flags = ["--input-shape", shape]
    out = tmp_path / "deploy" / name
    got, inputs, printed = _arm64_bundle_run(models / file, flags, out, tmp_path)
    assert "MB" in printed
    print(printed.strip())  # the bundle size, visible with pytest -s
    try:  # the session's shared artifact cache (tests/conftest.py), when there is one
        host = request.getfixturevalue("artifacts").get(name, "host")
        want = artifact.load(host).run(inputs)
    except pytest.FixtureLookupError:
        want = _host_run(models / file, flags, tmp_path / "host" / f"{name}.so", inputs)
    _assert_close(got, want)
