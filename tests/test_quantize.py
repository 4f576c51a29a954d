"""int8 post-training quantization: calibration, the flow, pre-quantized models, CLI, PP-OCR cls."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx import numpy_helper as nh

from lwc import calibrate, driver
from lwc.errors import LwcError
from lwc.frontend import TensorSpec
from lwc.quantize import QuantizeOptions, cosine

SPEC = [TensorSpec("x", (1, 3, 16, 16), "float32")]


def small_cnn(seed: int = 0) -> onnx.ModelProto:
    """fp32 conv(3->8) -> relu -> depthwise conv -> relu -> global pool -> flatten -> gemm(8->4)."""
    rng = np.random.default_rng(seed)
    inits = [
        nh.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1"),
        nh.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b1"),
        nh.from_array((rng.normal(0, 0.3, (8, 1, 3, 3)) * np.geomspace(0.05, 2, 8)[:, None, None, None]).astype(np.float32), "w2"),
        nh.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b2"),
        nh.from_array(rng.normal(0, 0.5, (4, 8)).astype(np.float32), "w3"),
        nh.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "b3"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=8, name="dwconv"),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def samples(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32) for _ in range(n)]


def write_samples(folder: Path, arrays: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        np.save(folder / f"{i:03d}.npy", a)
    return folder


def ort(model, x):
    """onnxruntime with its default optimizations (fused int8 kernels for QDQ models)."""
    import ort_reference

    return ort_reference.run(model, {"x": x}, fused=True)[0]


def residual_cnn(seed: int = 1) -> onnx.ModelProto:
    """fp32 conv(3->8) -> relu -> r; conv1x1(r) -> add(r, .) -> conv1x1(8->4): a residual add
    whose skip input is also a quantized layer's activation."""
    rng = np.random.default_rng(seed)
    inits = [nh.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1"),
             nh.from_array(rng.normal(0, 0.3, (8, 8, 1, 1)).astype(np.float32), "w2"),
             nh.from_array(rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32), "w3")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["c2"], name="conv2"),
             helper.make_node("Add", ["r", "c2"], ["s"], name="skip"),
             helper.make_node("Conv", ["s", "w3"], ["y"], name="conv3")]
    graph = helper.make_graph(nodes, "res", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_residual_add_reads_the_quantized_skip_and_needs_no_quantize_kernel(tmp_path):
    """As in onnxruntime's QDQ format, the add reads the skip through the DequantizeLinear of
    conv2's input: conv1's kernel then writes uint8 only, with no float copy and separate
    quantize kernel (PP-OCR cls: 75 -> 68 kernels)."""
    from lwc.quantize import rewrite

    model = residual_cnn()
    layers = rewrite.find_layers(model)
    ranges = {layer.activation: (-1.0, 3.0) for layer in layers}
    qdq = rewrite.insert_qdq(model, layers, ranges)
    skip = next(n for n in qdq.graph.node if n.name == "skip")
    assert list(skip.input) == ["r__dq", "c2"]
    onnx.checker.check_model(qdq)  # topologically sorted: the Q/DQ pair precedes the add
    folder = write_samples(tmp_path / "calib", samples(8))
    result = driver.compile(model, "host", quantize=QuantizeOptions(calib=folder, progress=False),
                            use_tuning_logs=False)
    names = [k["name"] for k in result.describe()["report"]["kernels"]]
    # quantize of x; conv1 + requantize; conv2 + add + quantize; conv3 (with a float skip: 5)
    assert len(names) == 4 and not any("quantize" in n for n in names[1:2] + names[3:]), names
    for x in samples(3, seed=5):
        assert cosine(result.run({"x": x})[0], ort(model, x)) > 0.99


# --------------------------------------------------------------------------- calibration data


def test_load_samples_npy_npz_and_stacks(tmp_path):
    xs = samples(3)
    np.save(tmp_path / "a.npy", xs[0])
    np.save(tmp_path / "b.npy", np.concatenate(xs[1:]))  # [2, 3, 16, 16] stack
    np.savez(tmp_path / "c.npz", x=xs[0])
    got = calibrate.load_samples(tmp_path, SPEC)
    assert len(got) == 4 and all(s["x"].shape == (1, 3, 16, 16) for s in got)


def test_bad_calibration_folders_name_file_and_shape(tmp_path):
    with pytest.raises(LwcError, match="no .npy/.npz/image files.*x \\[1, 3, 16, 16\\]"):
        calibrate.load_samples(tmp_path, SPEC)
    np.save(tmp_path / "wrong.npy", np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(LwcError, match="wrong.npy: shape \\[1, 3, 8, 8\\].*\\[1, 3, 16, 16\\]"):
        calibrate.load_samples(tmp_path, SPEC)
    (tmp_path / "wrong.npy").unlink()
    np.savez(tmp_path / "keys.npz", image=np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(LwcError, match="keys.npz: keys \\['image'\\].*inputs are x"):
        calibrate.load_samples(tmp_path, SPEC)
    (tmp_path / "keys.npz").unlink()
    np.save(tmp_path / "ints.npy", np.zeros((1, 3, 16, 16), np.int64))
    with pytest.raises(LwcError, match="ints.npy: dtype int64.*float32"):
        calibrate.load_samples(tmp_path, SPEC)


def test_random_calibration_warns_loudly(capsys):
    with pytest.warns(UserWarning, match="random"):
        got = calibrate.random_samples(SPEC, 2)
    assert len(got) == 2
    assert "WARNING" in capsys.readouterr().err


def test_methods_parse_and_clip_outliers():
    assert str(calibrate.parse_method("percentile:99.9")) == "percentile:99.9"
    with pytest.raises(LwcError, match="expected minmax"):
        calibrate.parse_method("mse")
    rng = np.random.default_rng(0)
    v = np.abs(rng.normal(0, 1, 200_000))
    v[:5] = 50.0  # outliers
    edges = np.linspace(0, 50, calibrate.NUM_BINS + 1)
    hist = np.histogram(v, edges)[0]
    t_pct = calibrate.percentile_threshold(hist, edges, 99.99)
    t_kl = calibrate.entropy_threshold(hist, edges)
    assert 3.0 < t_pct < 6.0
    assert 2.0 < t_kl < 10.0


# --------------------------------------------------------------------------- the flow


@pytest.fixture(scope="module")
def cnn_int8(tmp_path_factory):
    folder = write_samples(tmp_path_factory.mktemp("calib"), samples(16))
    model = small_cnn()
    result = driver.compile(model, "host", quantize=QuantizeOptions(calib=folder, progress=False))
    return model, result


def test_quantized_cnn_accuracy_and_manifest(cnn_int8):
    model, result = cnn_int8
    q = result.describe()["quantization"]
    assert [layer["name"] for layer in q["layers"]] == ["conv1", "dwconv", "fc"]
    assert all(layer["int8"] and layer["sqnr_db"] > 20 for layer in q["layers"])
    assert q["lowering"]["int8_conv2d"] == 2 and q["lowering"]["int8_matmul"] == 1
    assert q["lowering"]["FuseRequantize"] == 1  # conv1 -> relu -> requantize for dwconv
    for x in samples(4, seed=9):
        assert cosine(result.run({"x": x})[0], ort(model, x)) > 0.99


def upsampler(kernel: int = 2, stride: int = 2, seed: int = 0) -> onnx.ModelProto:
    """conv(3->6) -> relu -> ConvTranspose(6->4, kernel, stride, bias) -> sigmoid: the
    shape of PP-OCRv4 det's head."""
    rng = np.random.default_rng(seed)
    side = 15 * stride + kernel  # ConvTranspose of 16 pixels
    inits = [
        nh.from_array(rng.normal(0, 0.3, (6, 3, 3, 3)).astype(np.float32), "w1"),
        nh.from_array(rng.normal(0, 0.5, (6, 4, kernel, kernel)).astype(np.float32), "wt"),
        nh.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "bt"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("ConvTranspose", ["r1", "wt", "bt"], ["t"], kernel_shape=[kernel, kernel],
                         strides=[stride, stride], name="up"),
        helper.make_node("Sigmoid", ["t"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "up", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, side, side])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("kernel, stride, rewritten", [(2, 2, True), (3, 3, True), (3, 2, False)])
def test_conv_transpose_with_kernel_equal_stride_becomes_conv_and_depth_to_space(kernel, stride, rewritten):
    """Non-overlapping ConvTranspose == 1x1 Conv + DepthToSpace (CRD), checked in
    onnxruntime; an overlapping one (kernel 3, stride 2) is left alone."""
    from lwc.quantize import conv_transpose_to_conv

    model = upsampler(kernel, stride)
    out = conv_transpose_to_conv(model)
    ops = [n.op_type for n in out.graph.node]
    assert ("ConvTranspose" not in ops and ops.count("DepthToSpace") == 1) == rewritten
    assert [n.op_type for n in model.graph.node].count("ConvTranspose") == 1  # input untouched
    for x in samples(3, seed=4):
        np.testing.assert_allclose(ort(out, x), ort(model, x), rtol=0, atol=1e-5)


def test_conv_transpose_is_quantized_and_accurate(tmp_path):
    folder = write_samples(tmp_path / "calib", samples(16))
    model = upsampler()
    result = driver.compile(model, "host", quantize=QuantizeOptions(calib=folder, progress=False))
    q = result.describe()["quantization"]
    assert [layer["name"] for layer in q["layers"]] == ["conv1", "up__conv"]
    assert q["lowering"]["int8_conv2d"] == 2 and q["lowering"]["fp32_conv2d"] == 0
    for x in samples(4, seed=9):
        assert cosine(result.run({"x": x})[0], ort(model, x)) > 0.99


def test_max_accuracy_drop_keeps_sensitive_layers_fp32(tmp_path):
    folder = write_samples(tmp_path, samples(8))
    opts = QuantizeOptions(calib=folder, max_accuracy_drop=1e-7, progress=False)
    from lwc.quantize import import_quantized

    imported, report = import_quantized(small_cnn(), None, opts)
    assert report.fallback  # a bound this tight needs fp32 layers
    kept = {row["name"] for row in report.layers if not row["int8"]}
    assert kept == set(report.fallback)
    ops = [n.op_type for n in imported.onnx_model.graph.node]
    assert ops.count("DequantizeLinear") < 6


def test_pre_quantized_qdq_model_runs_on_integer_kernels(tmp_path):
    """onnxruntime's quantize_static (QDQ, per-channel) -> lwc matches the QDQ graph (onnxruntime
    op by op) and onnxruntime's own int8 kernels, where those are exact, within one step."""
    import ort_reference

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    fp32, qdq = tmp_path / "fp32.onnx", tmp_path / "qdq.onnx"
    onnx.save(small_cnn(), fp32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": x} for x in samples(16)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(fp32), str(qdq), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    model = onnx.load(qdq)
    result = driver.compile(str(qdq), "host")
    low = result.describe()["quantization"]["lowering"]
    assert low["int8_conv2d"] == 2 and low["fp32_conv2d"] == 0 and low["int8_matmul"] == 1
    producer = {o: n for n in model.graph.node for o in n.output}
    out_dq = producer[model.graph.output[0].name]
    assert out_dq.op_type == "DequantizeLinear"
    step = float(nh.to_array(next(t for t in model.graph.initializer if t.name == out_dq.input[1])))
    for x in samples(4, seed=5):
        got = result.run({"x": x})[0]
        assert np.abs(got - ort_reference.run(qdq, {"x": x})[0]).max() <= step * 1.001
        if ort_reference.fused_int8_is_exact():  # else its x86 u8s8 kernels saturate
            assert np.abs(got - ort(qdq, x)).max() <= step * 1.001


def test_cli_compile_and_verify_inputs(tmp_path, capsys):
    from lwc.cli import main

    folder = write_samples(tmp_path / "calib", samples(8))
    onnx.save(small_cnn(), tmp_path / "cnn.onnx")
    so = tmp_path / "cnn-int8.so"
    assert main(["compile", str(tmp_path / "cnn.onnx"), "--quantize", "int8", "--calib", str(folder),
                 "--calib-method", "percentile:99.99", "-o", str(so)]) == 0
    err = capsys.readouterr().err
    assert "worst layers" in err and "SQNR" in err
    assert main(["verify", str(tmp_path / "cnn.onnx"), str(so), "--inputs", str(folder)]) == 0
    assert "PASS" in capsys.readouterr().out
    assert main(["compile", str(tmp_path / "cnn.onnx"), "--quantize", "int8", "--calib",
                 str(tmp_path / "none"), "-o", str(so)]) == 2
    assert "not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- PP-OCR cls (real model)


def text_line(rng, h: int = 48, w: int = 192) -> tuple[np.ndarray, int]:
    """A numpy-rendered text line (no image library): glyph-like strokes with x-height,
    ascenders and descenders on a light noisy background, upright or rotated 180 degrees
    (label 1), normalised as PP-OCR does ((x/255 - 0.5) / 0.5, NCHW)."""
    img = np.full((h, w), rng.uniform(0.6, 1.0), np.float32)
    ink = rng.uniform(0.0, 0.35)
    xh = int(rng.integers(14, 22))
    base = int(rng.integers(h // 2 + xh // 2, min(h - 4, h // 2 + xh)))
    top, x, end = base - xh, int(rng.integers(2, 10)), int(rng.integers(w // 2, w))
    while x < end - 8:
        cw, t, kind = int(rng.integers(7, 14)), int(rng.integers(2, 4)), int(rng.integers(0, 6))
        mid = (top + base) // 2
        if kind == 0:  # o
            img[top:top + t, x:x + cw] = img[base - t:base, x:x + cw] = ink
            img[top:base, x:x + t] = img[top:base, x + cw - t:x + cw] = ink
        elif kind == 1:  # b/d: ascender
            img[max(top - int(xh * 0.7), 1):base, x:x + t] = ink
            img[top:top + t, x:x + cw] = img[base - t:base, x:x + cw] = ink
        elif kind == 2:  # n
            img[top:base, x:x + t] = img[top:top + t, x:x + cw] = img[top:base, x + cw - t:x + cw] = ink
        elif kind == 3:  # e
            img[top:base, x:x + t] = img[top:top + t, x:x + cw] = ink
            img[mid:mid + t, x:x + cw] = img[base - t:base, x:x + cw] = ink
        elif kind == 4:  # p: descender
            img[top:min(base + int(xh * 0.6), h - 1), x:x + t] = ink
            img[top:top + t, x:x + cw] = img[mid:mid + t, x:x + cw] = ink
        x += cw + int(rng.integers(2, 6))
    img += rng.normal(0, 0.03, img.shape).astype(np.float32)
    rgb = np.stack([img * rng.uniform(0.9, 1.1) for _ in range(3)])
    label = int(rng.integers(0, 2))
    if label:
        rgb = rgb[:, ::-1, ::-1]
    return np.ascontiguousarray(((np.clip(rgb, 0, 1) - 0.5) / 0.5)[None].astype(np.float32)), label


def cls_model() -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None:
        pytest.skip("rapidocr-onnxruntime (ships PP-OCR models) is not installed")
    return Path(spec.origin).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"


@pytest.mark.slow
def test_ppocr_cls_int8_cosine_and_agreement(tmp_path):
    from lwc.quantize import top1_agreement

    model = cls_model()
    rng = np.random.default_rng(0)
    data = [text_line(rng)[0] for _ in range(64 + 100)]
    calib = write_samples(tmp_path / "calib", data[:64])
    result = driver.compile(model, "host", {"x": [1, 3, 48, 192]},
                            quantize=QuantizeOptions(calib=calib, progress=False))
    q = result.describe()["quantization"]["lowering"]
    assert q["fp32_conv2d"] == 0 and q["int8_conv2d"] == 53
    from lwc import artifact

    held = data[64:]
    vm = artifact.load(result.export(tmp_path / "cls-int8.so"))
    got = [vm.run({"x": x})[0] for x in held]
    ref = [ort(model, x) for x in held]
    cos = [cosine(g, r) for g, r in zip(got, ref)]
    assert np.mean(cos) >= 0.99
    assert top1_agreement(ref, got) >= 0.98
