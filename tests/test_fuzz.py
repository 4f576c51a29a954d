"""Fuzzing lwc's inputs (issue 22): a CI-sized share of each fuzzer, and one regression
test per finding.

- ONNX loader: 300 seeded cases of benchmarks/fuzz_loader.py (small models only), each
  through ``lwc inspect`` and ``lwc compile`` (stopped after the prepare stage) in a
  forked worker: exit 0 or 2, one ``lwc: error:`` line, no traceback, no hang, nothing
  left in -o's folder. The full run (10,000 cases): benchmarks/fuzz_loader.md.
- C API: tests/fuzz/capi_fuzz.c under libFuzzer + ASan + UBSan for a few seconds
  (benchmarks/fuzz_capi.sh runs it for minutes, and the ThreadSanitizer driver).
  The C API's regression cases are in tests/deploy_bad_calls.c.
- Threads: tests/test_fuzz_threads.py.
"""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
from contextlib import redirect_stderr
from pathlib import Path

import onnx
import pytest
from lwc import cli, frontend
from lwc.errors import LwcError
from onnx import TensorProto, numpy_helper

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


fuzz_loader = _load("fuzz_loader", ROOT / "benchmarks" / "fuzz_loader.py")


# --------------------------------------------------------------------------- the loader


def test_loader_fuzz_subset():
    summary = fuzz_loader.run(300, seed=12345, timeout=10.0, small_only=True)
    assert not summary.findings, fuzz_loader.format_findings(summary.findings)
    # the cases reach past the first check: some fail late, some get through prepare
    assert summary.by_exit[("compile", 0)] > 0 and summary.by_exit[("compile", 2)] > 200


def _conv_with(edit) -> onnx.ModelProto:
    m = fuzz_loader._conv_model()
    edit(m)
    return m


def _raw(name: str, data: bytes):
    def edit(m):
        t = next(t for t in m.graph.initializer if t.name == name)
        t.ClearField("float_data")
        t.raw_data = data
    return edit


def _dtype(name: str, data_type: int):
    def edit(m):
        t = next(t for t in m.graph.initializer if t.name == name)
        t.raw_data = numpy_helper.to_array(t).tobytes()
        t.ClearField("float_data")
        t.data_type = data_type
    return edit


def _dim(name: str, value: int):
    def edit(m):
        next(t for t in m.graph.initializer if t.name == name).dims[0] = value
    return edit


def _typed_count(m):
    t = m.graph.initializer[1]  # "b", 4 floats
    t.ClearField("raw_data")
    del t.float_data[:]
    t.float_data.extend([1.0, 2.0])


# "long", "dtype changed" and "unknown dtype" were "lwc: internal error: ValueError: ..."
# (numpy's reshape in the sparsity analysis of `lwc inspect`) before lwc.model_checks;
# the ONNX checker itself refuses data that is too short and negative dims.
TENSOR_CASES = {
    "raw data long": (_raw("w", b"\0" * 440), "'w': 440 bytes of data, but its shape [4, 3, 3, 3] of float needs 432"),
    "dtype changed": (_dtype("b", TensorProto.FLOAT16), "'b': 16 bytes of data, but its shape [4] of float16 needs 8"),
    "unknown dtype": (_dtype("b", 99), "'b' has unknown data type 99"),
    "raw data short": (_raw("w", b"\0" * 12), "(tensor name: w) raw_data size (12 bytes) is too small"),
    "negative dim": (_dim("w", -1), "Negative dimension value (tensor name: w)"),
    "huge dim": (_dim("w", 2**40), "(tensor name: w) raw_data size (432 bytes) is too small"),
    "typed count": (_typed_count, "(tensor name: b) float_data size (2) is too small"),
}


def _value_type(m):
    m.graph.input[0].type.tensor_type.elem_type = 77


def _attribute(node: int, name: str, value):
    def edit(m):
        n = m.graph.node[node]
        for a in list(n.attribute):
            if a.name == name:
                n.attribute.remove(a)
        n.attribute.append(onnx.helper.make_attribute(name, value))
    return edit


# found in the 10,000-case run: "lwc: internal error: KeyError: 77" (numpy's dtype table),
# and `lwc compile` killed by SIGFPE inside onnxsim's shape inference (strides 0)
TENSOR_CASES.update({
    "unknown value type": (_value_type, "graph input 'x' has unknown element type 77"),
    "zero stride": (_attribute(0, "strides", [1, 0]), "node 'conv' (Conv): strides [1, 0] must be >= 1"),
    "zero dilation": (_attribute(0, "dilations", [0, 1]), "node 'conv' (Conv): dilations [0, 1] must be >= 1"),
    "zero group": (_attribute(0, "group", 0), "node 'conv' (Conv): group 0 must be >= 1"),
})


@pytest.mark.parametrize("case", sorted(TENSOR_CASES))
def test_tensor_data_checked(case, tmp_path):
    edit, message = TENSOR_CASES[case]
    path = tmp_path / "m.onnx"
    onnx.save(_conv_with(edit), path)
    with pytest.raises(LwcError) as err:
        frontend.load_onnx(path)
    assert message in str(err.value)
    _assert_one_error_line(["inspect", str(path)], message)
    _assert_one_error_line(["compile", str(path), "-o", str(tmp_path / "x.so"), "-q"], message)


def test_name_not_utf8(tmp_path):
    """Found in the CI subset (seed 12345, case 78): a node name that is not UTF-8 came
    back from protobuf as bytes: `lwc inspect` "internal error: TypeError: unsupported
    format string passed to bytes.__format__", `lwc compile` failed writing the manifest."""
    data = fuzz_loader._conv_model().SerializeToString()
    assert data.find(b"conv") < data.find(b"relu")  # the first "conv" is node 0's name
    path = tmp_path / "m.onnx"
    path.write_bytes(data.replace(b"conv", b"co\xeev", 1))
    message = "node #0 ('Conv') name b'co\\xeev' is not UTF-8 text"
    with pytest.raises(LwcError) as err:
        frontend.load_onnx(path)
    assert message in str(err.value)
    _assert_one_error_line(["inspect", str(path)], message)
    _assert_one_error_line(["compile", str(path), "-o", str(tmp_path / "x.so"), "-q"], message)


def _external(location: str, **entries):
    def edit(m):
        t = next(t for t in m.graph.initializer if t.name == "w")
        data = numpy_helper.to_array(t).tobytes()
        for f in ("raw_data", "float_data"):
            t.ClearField(f)
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value=location)
        for k, v in entries.items():
            t.external_data.add(key=k, value=str(v))
        edit.data = data
    return edit


EXTERNAL_CASES = {
    "nul in location": (_external("w\x00.bin"), "location 'w\\x00.bin' is not a file name"),
    "offset past the end": (_external("w.bin", offset=2**40), "lie past the end of 'w.bin' (432 bytes)"),
    "length past the end": (_external("w.bin", length=2**40), "lie past the end of 'w.bin' (432 bytes)"),
    "negative length": (_external("w.bin", length=-1), "length '-1' is not a whole number >= 0"),
    "length not a number": (_external("w.bin", length="abc"), "length 'abc' is not a whole number >= 0"),
    "escapes the folder": (_external("../w.bin"), "points outside the model's folder"),
}


@pytest.mark.parametrize("case", sorted(EXTERNAL_CASES))
def test_external_data_checked(case, tmp_path):
    edit, message = EXTERNAL_CASES[case]
    model = _conv_with(edit)
    (tmp_path / "w.bin").write_bytes(edit.data)
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "m.onnx" if case == "escapes the folder" else tmp_path / "m.onnx"
    onnx.save(model, path)
    with pytest.raises(LwcError, match="initializer 'w'") as err:
        frontend.load_onnx(path)
    assert message in str(err.value)
    _assert_one_error_line(["compile", str(path), "-o", str(tmp_path / "x.so"), "-q"], message)
    assert not (tmp_path / "x.so").exists() and not (tmp_path / "x.json").exists()


def _assert_one_error_line(argv: list[str], message: str) -> None:
    err = io.StringIO()
    with redirect_stderr(err):
        assert cli.main(argv) == 2
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lwc: error: ") and message in lines[0], lines


# --------------------------------------------------------------------------- the C API

capi_build = _load("capi_build", ROOT / "tests" / "fuzz" / "capi_build.py")


def test_capi_fuzz_short(tmp_path):
    """libFuzzer (else seeded random programs with gcc) for 10 s; no sanitizer report.
    The sanitized build (~25 s) is cached in lwc's cache folder by source hash."""
    kind = "libfuzzer" if capi_build.have_libfuzzer(tmp_path) else "standalone"
    if kind == "standalone" and capi_build.clang() is None and not _have("gcc"):
        pytest.skip("no clang with libFuzzer and no gcc: cannot build the C API fuzzer")
    model = capi_build.make_model(tmp_path)
    try:
        exe = capi_build.cached_build(kind)
    except RuntimeError as err:
        pytest.skip(f"cannot build the sanitized C API harness: {str(err).splitlines()[0]}")
    env = {**os.environ, "LWC_FUZZ_MODEL": str(model), "TVM_NUM_THREADS": "1",
           "ASAN_OPTIONS": "detect_leaks=0"}
    if kind == "libfuzzer":
        cmd = [str(exe), "-max_total_time=10", "-max_len=512", "-len_control=0", "-seed=1",
               "-rss_limit_mb=4096", f"-artifact_prefix={tmp_path}/"]
    else:
        cmd = [str(exe), "10", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "ERROR" not in proc.stderr and "runtime error" not in proc.stderr


def _have(tool: str) -> bool:
    import shutil

    return shutil.which(tool) is not None
