"""Cross-compile a small ONNX model for aarch64 and run it here under qemu-aarch64.

Needs the Debian packages qemu-user and g++-aarch64-linux-gnu (installed in CI) and, on
the first run, network access for ``pip download`` of the aarch64 TVM wheels.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm.relax.frontend.onnx import from_onnx

from lwc.cross_runtime import run_aarch64
from lwc.errors import LwcError

INPUT_SHAPE = (1, 3, 16, 16)
AARCH64_TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
EM_AARCH64 = 183


def _model() -> onnx.ModelProto:
    """Conv -> Relu -> MaxPool (output 'pool'), then Flatten -> Gemm (output 'logits')."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    fc_w = numpy_helper.from_array(
        (rng.standard_normal((10, 8 * 8 * 8)) * 0.05).astype(np.float32), "fc_w"
    )
    fc_b = numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "fc_b")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_relu_pool_fc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(INPUT_SHAPE))],
        [
            helper.make_tensor_value_info("pool", TensorProto.FLOAT, [1, 8, 8, 8]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10]),
        ],
        initializer=[w, b, fc_w, fc_b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", "not an ELF file"
    endian = "<" if header[5] == 1 else ">"
    return struct.unpack(endian + "H", header[18:20])[0]


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return _model()


@pytest.fixture(scope="module")
def artifact(model, tmp_path_factory) -> Path:
    mod = from_onnx(
        model, shape_dict={"x": list(INPUT_SHAPE)}, keep_params_in_input=False
    )
    target = tvm.target.Target(AARCH64_TARGET)
    path = tmp_path_factory.mktemp("aarch64") / "model.so"
    tvm.compile(mod, target=target).export_library(
        str(path), fcompile=tvm.support.cc.cross_compiler("aarch64-linux-gnu-g++")
    )
    return path


def test_artifact_is_aarch64(artifact):
    assert _elf_machine(artifact) == EM_AARCH64


def test_matches_onnxruntime(model, artifact):
    x = np.random.default_rng(42).standard_normal(INPUT_SHAPE).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = sess.run(None, {"x": x})

    outputs, mean_ms = run_aarch64(artifact, [("x", x)], repeat=2, timeout_s=300)

    assert len(outputs) == len(expected) == 2
    for got, want in zip(outputs, expected):
        assert got.shape == want.shape
        assert got.dtype == want.dtype
        assert np.max(np.abs(got - want)) <= 1e-4
    assert mean_ms is not None and mean_ms > 0


def test_no_repeat_gives_no_time(artifact):
    x = np.zeros(INPUT_SHAPE, np.float32)
    outputs, mean_ms = run_aarch64(artifact, [("x", x)], timeout_s=300)
    assert mean_ms is None
    assert [o.shape for o in outputs] == [(1, 8, 8, 8), (1, 10)]


def test_wrong_shape_raises_lwc_error(artifact):
    x = np.zeros((1, 3, 8, 8), np.float32)
    with pytest.raises(LwcError) as info:
        run_aarch64(artifact, [("x", x)], timeout_s=300)
    message = str(info.value)
    assert "\n" not in message
    assert "lwc_runner:" in message


def test_wrong_input_count_raises_lwc_error(artifact):
    x = np.zeros(INPUT_SHAPE, np.float32)
    with pytest.raises(LwcError, match="lwc_runner:"):
        run_aarch64(artifact, [("x", x), ("extra", x)], timeout_s=300)


def test_missing_artifact_raises_lwc_error(tmp_path):
    with pytest.raises(LwcError, match="not found"):
        run_aarch64(tmp_path / "absent.so", [])


def test_host_artifact_raises_lwc_error(model, tmp_path):
    mod = from_onnx(model, shape_dict={"x": list(INPUT_SHAPE)}, keep_params_in_input=False)
    path = tmp_path / "host.so"
    tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"})).export_library(str(path))
    with pytest.raises(LwcError, match="not aarch64"):
        run_aarch64(path, [("x", np.zeros(INPUT_SHAPE, np.float32))])
