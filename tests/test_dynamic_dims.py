"""Dynamic input dims: ``--input-shape x:1,3,48,96..1280`` compiles ONE artifact that accepts
any value of the range in that dim (issue 21, item 3).

- parsing and resolving ranges (``lwc.frontend``): the syntax, errors, symbol names;
- a small synthetic model with a symbolic dim (conv + matmul over the width) against
  onnxruntime at several widths, on host and (qemu) arm64;
- PP-OCRv4 rec compiled once with a dynamic width (module fixture) against onnxruntime
  at widths 96, 320 and 1280 (max abs diff <= 1e-4), its manifest, and the out-of-range
  errors of the Python loader (``LwcError``) and the C API (``LWC_ERR_SHAPE_MISMATCH``).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from lwc import artifact, driver, frontend
from lwc.errors import LwcError
from onnx import TensorProto, helper, numpy_helper

OCR_ATOL = 1e-4


def _ort(model, feed: dict) -> list[np.ndarray]:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


# --------------------------------------------------------------------------- syntax


def test_parse_input_shape_ranges():
    assert frontend.parse_input_shape("x:1,3,48,96..1280") == ("x", [1, 3, 48, (96, 1280)])
    assert frontend.parse_input_shape("a:b:2..2,0") == ("a:b", [2, 0])  # LO == HI: fixed
    assert frontend.parse_dim((1, 8)) == (1, 8)
    assert frontend.parse_dim("7") == 7


@pytest.mark.parametrize("text, words", [
    ("x:1,3,48,1280..96", "1 <= LO < HI"),
    ("x:1,3,48,0..5", "1 <= LO < HI"),
    ("x:1,3,48,a..b", "integers or ranges LO..HI"),
    ("x:1,3,48,96..", "integers or ranges LO..HI"),
    ("x:1.5,3", "integers or ranges LO..HI"),
])
def test_parse_input_shape_bad_ranges(text, words):
    with pytest.raises(LwcError, match=words):
        frontend.parse_input_shape(text)


def _width_model(opset: int = 13) -> onnx.ModelProto:
    """X [1, 4, 6, W] -> Conv 3x3 (pad 1, 8 channels) -> Relu -> Transpose to [1, 6, W, 8]
    -> MatMul [8, 16] -> Softmax over the last axis; W symbolic ("W")."""
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.3,
             "b": rng.standard_normal(8).astype(np.float32),
             "m": rng.standard_normal((8, 16)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["X", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("MatMul", ["t", "m"], ["mm"]),
             helper.make_node("Softmax", ["mm"], ["Y"], axis=-1)]
    graph = helper.make_graph(
        nodes, "width", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4, 6, "W"])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def test_resolve_names_the_symbol_and_rejects_conflicts():
    model = _width_model()
    (spec,) = frontend.resolve_input_shapes(model, {"X": [1, 4, 6, "8..64"]})
    assert spec.shape == (1, 4, 6, "W") and spec.ranges == (("W", 8, 64),)
    assert spec.to_json() == {"name": "X", "shape": [1, 4, 6, "W"], "dtype": "float32",
                              "dims": {"W": [8, 64]}}
    with pytest.raises(LwcError, match="conflicts with the model's fixed shape"):
        frontend.resolve_input_shapes(model, {"X": [1, "2..4", 6, 8]})
    with pytest.raises(LwcError, match="dynamic shape.*LO..HI"):
        frontend.resolve_input_shapes(model, {})


# --------------------------------------------------------------------------- synthetic model


@pytest.fixture(scope="module")
def width_artifact(tmp_path_factory):
    result = driver.compile(_width_model(), "host", {"X": [1, 4, 6, "8..64"]})
    return artifact.load(result.export(tmp_path_factory.mktemp("dyn") / "width.so"))


@pytest.mark.parametrize("width", [8, 13, 64])
def test_synthetic_symbolic_width_matches_onnxruntime(width_artifact, width):
    x = np.random.default_rng(width).standard_normal((1, 4, 6, width)).astype(np.float32)
    (got,) = width_artifact.run({"X": x})
    (want,) = _ort(_width_model(), {"X": x})
    assert got.shape == (1, 6, width, 16)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_synthetic_manifest_and_out_of_range(width_artifact):
    (spec,) = width_artifact.inputs
    assert spec["shape"] == [1, 4, 6, "W"] and spec["dims"] == {"W": [8, 64]}
    assert width_artifact.outputs[0]["shape"] == [1, 6, "W", 16]
    assert width_artifact.accepts() == {"X": "[1, 4, 6, W] with W in 8..64"}
    with pytest.raises(LwcError, match=r"input 'X' dim 3 \(W\) is 65, outside the accepted "
                                       r"range 8..64"):
        width_artifact.run({"X": np.zeros((1, 4, 6, 65), np.float32)})
    with pytest.raises(LwcError, match="input 'X' dim 1 is 3, the artifact accepts only 4 there"):
        width_artifact.run({"X": np.zeros((1, 3, 6, 16), np.float32)})


def _activation_model() -> onnx.ModelProto:
    """X [1, 4, 6, W] -> Conv 3x3 (8 channels) -> HardSwish as Paddle writes it (Add, Clip,
    Mul, Div) -> Conv 1x1 (16 channels) -> HardSigmoid; W symbolic ("W")."""
    rng = np.random.default_rng(1)
    inits = {"w1": rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.4,
             "w2": rng.standard_normal((16, 8, 1, 1)).astype(np.float32) * 0.4,
             "three": np.array(3.0, np.float32), "lo": np.array(0.0, np.float32),
             "hi": np.array(6.0, np.float32), "six": np.array(6.0, np.float32)}
    nodes = [helper.make_node("Conv", ["X", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c1", "three"], ["a"]),
             helper.make_node("Clip", ["a", "lo", "hi"], ["cl"]),
             helper.make_node("Mul", ["c1", "cl"], ["m"]),
             helper.make_node("Div", ["m", "six"], ["hs"]),
             helper.make_node("Conv", ["hs", "w2"], ["c2"]),
             helper.make_node("HardSigmoid", ["c2"], ["Y"], alpha=0.2, beta=0.5)]
    graph = helper.make_graph(
        nodes, "act", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4, 6, "W"])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_symbolic_width_keeps_fused_activations_and_vector_tiles(tmp_path):
    """The activation passes keep symbolic dims (their kernels vectorize; the importer's
    Clip NaN guards do not), and a conv over the dynamic width vectorizes the width in
    full tiles with a partitioned tail; widths with and without a tail match onnxruntime."""
    from lwc import prepare as prepare_stage
    from lwc.schedules import CpuFacts, apply_rules
    from lwc.tuning.apply import prepare as lower

    model = _activation_model()
    prepared = prepare_stage.prepare(model, "host", {"X": [1, 4, 6, "8..512"]})
    changed = {p["name"]: p["changed"] for p in prepared.report["passes"]}
    assert changed["FuseHardSwish"] == {"hard_swish fused": 1}
    assert changed["FuseHardSigmoid"] == {"hard_sigmoid fused": 1}
    avx2 = CpuFacts(vector_bits=256, vector_regs=16, cores=2)
    scheduled, _ = apply_rules(lower(prepared.mod, prepared.tvm_target), avx2)
    convs = [f.script() for gv, f in scheduled.functions_items() if "conv2d" in gv.name_hint
             and isinstance(f, tvm.tirx.PrimFunc)]
    assert len(convs) == 2
    for conv in convs:
        assert '"pragma_loop_partition_hint": 1' in conv and "T.vectorized(T.int64(" in conv

    result = driver.compile(model, "host", {"X": [1, 4, 6, "8..512"]}, use_tuning_logs=False)
    art = artifact.load(result.export(tmp_path / "act.so"))
    for width in (8, 37, 300):
        x = np.random.default_rng(width).standard_normal((1, 4, 6, width)).astype(np.float32)
        (got,) = art.run({"X": x})
        (want,) = _ort(model, {"X": x})
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)



@pytest.mark.parametrize("lo, hi, lanes", [(96, 1280, 8), (320, 1280, 16), (8, 64, 4)])
def test_symbolic_vector_tile_fits_the_range(lo, hi, lanes):
    """The vector tile over a dynamic width (AVX-512: 16 fp32 lanes) halves while the
    range's small widths would run mostly in the scalar tail: rec's late-stage width
    (W - 1) // 4 + 1 is 24..320 for 96..1280 (8 lanes), 80..320 for 320..1280 (16, no
    tail at either end)."""
    from lwc.schedules import CpuFacts
    from lwc.schedules.analysis import symbolic_loops
    from lwc.schedules.common import symbolic_vector

    w = tvm.tirx.Var("W", "int64")
    extent = tvm.tirx.floordiv(w - 1, 4) + 1
    avx512 = CpuFacts(vector_bits=512, vector_regs=32, cores=2)
    with symbolic_loops({"W": round((lo * hi) ** 0.5)}, {"W": (lo, hi)}):
        assert symbolic_vector(extent, avx512) == lanes


def _head_model(classes: int = 6625) -> onnx.ModelProto:
    """X [T, 24] (T symbolic) -> MatMul [24, classes] + bias: rec's CTC head, shrunk."""
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((24, classes)).astype(np.float32) * 0.2, "w")
    b = numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["X", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["Y"])]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", 24])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", classes])], [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_dynamic_rows_stream_the_weight_in_chunks(tmp_path):
    """A matmul over a dynamic row count and 6625 columns (no lane tile) runs its columns
    in chunks of 265, the chunk loop outermost, so a chunk of the weight serves every row;
    it matches onnxruntime at a few row counts."""
    from lwc import prepare as prepare_stage
    from lwc.schedules import CpuFacts, apply_rules
    from lwc.tuning.apply import prepare as lower

    model = _head_model()
    prepared = prepare_stage.prepare(model, "host", {"X": ["1..200", 24]})
    avx2 = CpuFacts(vector_bits=256, vector_regs=16, cores=2)
    scheduled, _ = apply_rules(lower(prepared.mod, prepared.tvm_target), avx2)
    [head] = [f.script() for gv, f in scheduled.functions_items() if "matmul" in gv.name_hint
              and isinstance(f, tvm.tirx.PrimFunc)]
    assert "T.int64(265)" in head and "* T.int64(25)" in head, head

    result = driver.compile(model, "host", {"X": ["1..200", 24]}, use_tuning_logs=False)
    art = artifact.load(result.export(tmp_path / "head.so"))
    for rows in (1, 37, 200):
        x = np.random.default_rng(rows).standard_normal((rows, 24)).astype(np.float32)
        np.testing.assert_allclose(art.run({"X": x})[0], _ort(model, {"X": x})[0], rtol=1e-4, atol=1e-4)

def test_fixed_shape_manifest_has_no_dims():
    result = driver.compile(_width_model(), "host", {"X": [1, 4, 6, 16]})
    assert "dims" not in result.describe()["inputs"][0]
    assert result.describe()["inputs"][0]["shape"] == [1, 4, 6, 16]


@pytest.mark.qemu
def test_synthetic_symbolic_width_arm64_under_qemu(tmp_path):
    from lwc import cross_runtime

    if not cross_runtime.qemu_available():
        pytest.skip("qemu-aarch64 not found (apt-get install qemu-user)")
    result = driver.compile(_width_model(), "arm64", {"X": [1, 4, 6, "8..64"]})
    art = artifact.load(result.export(tmp_path / "width_arm64.so"))
    for width in (8, 37):
        x = np.random.default_rng(width).standard_normal((1, 4, 6, width)).astype(np.float32)
        np.testing.assert_allclose(art.run({"X": x})[0], _ort(_width_model(), {"X": x})[0],
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(LwcError, match="outside the accepted range 8..64"):
        art.run({"X": np.zeros((1, 4, 6, 100), np.float32)})


# --------------------------------------------------------------------------- PP-OCRv4 rec


@pytest.fixture(scope="module")
def rec_dynamic(ocr_models, tmp_path_factory):
    """PP-OCRv4 rec compiled once for widths 96..1280 (host), exported."""
    result = driver.compile(ocr_models["rec"], "host", {"x": [1, 3, 48, "96..1280"]})
    return result.export(tmp_path_factory.mktemp("rec_dyn") / "rec_dyn.so")


@pytest.mark.parametrize("width", [96, 320, 1280])
def test_rec_dynamic_width_matches_onnxruntime(rec_dynamic, ocr_models, width):
    x = np.random.default_rng(width).standard_normal((1, 3, 48, width)).astype(np.float32)
    (got,) = artifact.load(rec_dynamic).run({"x": x})
    (want,) = _ort(ocr_models["rec"], {"x": x})
    assert got.shape == want.shape == (1, width // 8, 6625)
    assert float(np.abs(got - want).max()) <= OCR_ATOL


def test_rec_dynamic_manifest(rec_dynamic):
    manifest = json.loads(rec_dynamic.with_suffix(".json").read_text())
    (inp,) = manifest["inputs"]
    assert inp == {"name": "x", "shape": [1, 3, 48, "x_3"], "dtype": "float32",
                   "dims": {"x_3": [96, 1280]}}
    assert manifest["outputs"][0]["shape"] == [1, "(x_3 - 5) // 8 + 1", 6625]


def test_rec_dynamic_out_of_range_python(rec_dynamic):
    art = artifact.load(rec_dynamic)
    with pytest.raises(LwcError) as info:
        art.run({"x": np.zeros((1, 3, 48, 2000), np.float32)})
    assert str(info.value) == ("input 'x' dim 3 (x_3) is 2000, outside the accepted range "
                               "96..1280: the artifact accepts [1, 3, 48, x_3] with x_3 in 96..1280")
    with pytest.raises(LwcError, match="input 'x' dim 2 is 32, the artifact accepts only 48"):
        art.run({"x": np.zeros((1, 3, 32, 320), np.float32)})


def test_rec_dynamic_c_api(rec_dynamic, ocr_models):
    from lwc.runtime import lwc_runtime

    model = lwc_runtime.load(rec_dynamic)
    assert model.inputs[0].shape == (1, 3, 48, -1)
    assert model.dim_ranges(0) == [(1, 1), (3, 3), (48, 48), (96, 1280)]
    assert model.outputs[0].shape == (1, -1, 6625)
    x = np.random.default_rng(1).standard_normal((1, 3, 48, 200)).astype(np.float32)
    got = model(x)
    assert got.shape == (1, 25, 6625)
    assert float(np.abs(got - _ort(ocr_models["rec"], {"x": x})[0]).max()) <= OCR_ATOL
    with pytest.raises(lwc_runtime.LwcRuntimeError) as info:
        model(np.zeros((1, 3, 48, 95), np.float32))
    assert info.value.status == "LWC_ERR_SHAPE_MISMATCH"
    assert info.value.message == ("input 'x' dim 3 (x_3) is 95, outside the accepted range "
                                  "96..1280: the model accepts [1, 3, 48, x_3] with x_3 in 96..1280")
    assert model(np.zeros((1, 3, 48, 96), np.float32)).shape == (1, 12, 6625)  # still usable


def test_bundle_c_example_takes_the_width_from_the_file(tmp_path):
    """`lwc compile --bundle` of a dynamic-width model: the C example reads a width-13
    input (the -1 dim from the file size) and matches onnxruntime."""
    import subprocess
    import sys

    onnx.save(_width_model(), tmp_path / "width.onnx")
    out = tmp_path / "bundle" / "width"
    subprocess.run([sys.executable, "-m", "lwc", "compile", str(tmp_path / "width.onnx"),
                    "--input-shape", "X:1,4,6,8..64", "--bundle", "-o", str(out)],
                   check=True, capture_output=True, timeout=600)
    assert "W in 8..64" in (out / "README.md").read_text()
    subprocess.run(["make", "-C", str(out / "example")], check=True, capture_output=True, timeout=300)
    x = np.random.default_rng(13).standard_normal((1, 4, 6, 13)).astype(np.float32)
    x.tofile(tmp_path / "X.bin")
    proc = subprocess.run([str(out / "example" / "run_model"), str(out / "width.so"),
                           str(tmp_path / "X.bin"), str(tmp_path / "Y.bin")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    got = np.fromfile(tmp_path / "Y.bin", np.float32).reshape(1, 6, 13, 16)
    np.testing.assert_allclose(got, _ort(_width_model(), {"X": x})[0], rtol=1e-5, atol=1e-5)
    x[..., :5].copy().tofile(tmp_path / "small.bin")  # width 5 < 8
    proc = subprocess.run([str(out / "example" / "run_model"), str(out / "width.so"),
                           str(tmp_path / "small.bin"), str(tmp_path / "Y.bin")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 1
    assert "LWC_ERR_SHAPE_MISMATCH: input 'X' dim 3 (W) is 5, outside the accepted range 8..64" \
        in proc.stderr
