"""SubsampleStridedConv1x1: strided 1x1 convs (ResNet v1 downsampling) as a strided slice +
stride-1 1x1 conv; numerics against onnxruntime, with and without the pass."""

import numpy as np
import pytest
from lwc.passes._support import count_ops
from lwc.prepare import prepare
from onnx import helper
from support import assert_matches_onnxruntime, model, tensor

RNG = np.random.default_rng(0)


def conv_model(c, o, hw, kernel, strides, pads=(0, 0, 0, 0), group=1):
    w = RNG.standard_normal((o, c // group, *kernel)).astype("float32") * 0.3
    b = RNG.standard_normal(o).astype("float32")
    out_hw = [(hw[i] + pads[i] + pads[i + 2] - kernel[i]) // strides[i] + 1 for i in range(2)]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=list(kernel),
                              strides=list(strides), pads=list(pads), group=group),
             helper.make_node("Relu", ["c"], ["y"])]
    return model(nodes, {"x": [1, c, *hw]}, {"y": [1, o, *out_hw]}, [tensor("w", w), tensor("b", b)])


@pytest.mark.parametrize("case", [
    dict(c=64, o=32, hw=(14, 14), kernel=(1, 1), strides=(2, 2)),  # ResNet's projection
    dict(c=8, o=16, hw=(13, 11), kernel=(1, 1), strides=(2, 3)),  # odd sizes: last row/col kept
    dict(c=8, o=8, hw=(9, 9), kernel=(1, 1), strides=(3, 3), group=2),
], ids=["resnet-2x2", "odd-2x3", "grouped-3x3"])
def test_strided_1x1_matches_onnxruntime(case):
    m = conv_model(**case)
    x = RNG.standard_normal((1, case["c"], *case["hw"])).astype("float32")
    mod = prepare(m, "host").mod
    assert count_ops(mod, "relax.strided_slice") == 1 and count_ops(mod, "relax.nn.conv2d") == 1
    assert_matches_onnxruntime(m, {"x": x})
    assert_matches_onnxruntime(m, {"x": x}, disabled=("SubsampleStridedConv1x1",))


@pytest.mark.parametrize("case", [
    dict(c=4, o=3, hw=(8, 8), kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)),
    dict(c=4, o=3, hw=(8, 8), kernel=(1, 1), strides=(2, 2), pads=(1, 1, 1, 1)),
], ids=["3x3", "padded-1x1"])
def test_other_strided_convs_are_declined_and_still_right(case):
    m = conv_model(**case)
    x = RNG.standard_normal((1, case["c"], *case["hw"])).astype("float32")
    prepared = prepare(m, "host")
    assert count_ops(prepared.mod, "relax.strided_slice") == 0
    record = next(r for r in prepared.records if r.name == "SubsampleStridedConv1x1")
    assert record.stats["declined"], record
    assert_matches_onnxruntime(m, {"x": x})


def test_qdq_conv_is_left_to_the_int8_stage():
    """A strided 1x1 conv on dequantized operands stays one QDQ pattern (a slice between
    DequantizeLinear and Conv would keep the int8 stage from lowering it)."""
    from onnx import TensorProto, numpy_helper

    w = RNG.integers(-100, 100, (8, 4, 1, 1)).astype(np.int8)
    inits = [numpy_helper.from_array(w, "w"), tensor("ws", np.array(0.02, np.float32)),
             numpy_helper.from_array(np.array(0, np.int8), "wz"), tensor("xs", np.array(0.05, np.float32)),
             numpy_helper.from_array(np.array(128, np.uint8), "xz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"]),
             helper.make_node("Conv", ["xd", "wd"], ["y"], kernel_shape=[1, 1], strides=[2, 2])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    prepared = prepare(m, "host")
    record = next(r for r in prepared.records if r.name == "SubsampleStridedConv1x1")
    assert [d["reason"] for d in record.stats["declined"]] == [
        "a QDQ conv (the int8 stage lowers it as one pattern)"]
    assert count_ops(prepared.mod, "relax.strided_slice") == 0
