"""ConvTransposeToConv: stride == kernel transposed convs (upsamplers) as 1x1 conv +
depth-to-space; numerics against onnxruntime, with the pass and with BatchNorm folded in."""

import numpy as np
import pytest
from lwc.passes._support import count_ops
from lwc.prepare import prepare
from onnx import helper
from support import assert_matches_onnxruntime, model, tensor

RNG = np.random.default_rng(0)


def conv_t_model(c, o, hw, kernel, strides, pads=(0, 0, 0, 0), act="Sigmoid", bn=False):
    w = RNG.standard_normal((c, o, *kernel)).astype("float32") * 0.3
    b = RNG.standard_normal(o).astype("float32")
    out_hw = [(hw[i] - 1) * strides[i] + kernel[i] - pads[i] - pads[i + 2] for i in range(2)]
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["t"], kernel_shape=list(kernel),
                              strides=list(strides), pads=list(pads))]
    inits = [tensor("w", w), tensor("b", b)]
    last = "t"
    if bn:
        inits += [tensor("s", RNG.uniform(0.5, 2, o).astype("float32")),
                  tensor("bb", RNG.standard_normal(o).astype("float32")),
                  tensor("m", RNG.standard_normal(o).astype("float32")),
                  tensor("v", RNG.uniform(0.5, 2, o).astype("float32"))]
        nodes.append(helper.make_node("BatchNormalization", ["t", "s", "bb", "m", "v"], ["n"]))
        last = "n"
    nodes.append(helper.make_node(act, [last], ["y"]))
    return model(nodes, {"x": [1, c, *hw]}, {"y": [1, o, *out_hw]}, inits)


@pytest.mark.parametrize("case", [
    dict(c=24, o=1, hw=(10, 12), kernel=(2, 2), strides=(2, 2)),  # PP-OCRv4 det's last upsampler
    dict(c=8, o=6, hw=(5, 7), kernel=(2, 3), strides=(2, 3), act="Relu", bn=True),
    dict(c=4, o=3, hw=(6, 6), kernel=(4, 4), strides=(4, 4), act="Relu"),
], ids=["det-2x2", "2x3-bn", "4x4"])
def test_upsampler_matches_onnxruntime(case):
    m = conv_t_model(**case)
    x = RNG.standard_normal((1, case["c"], *case["hw"])).astype("float32")
    assert_matches_onnxruntime(m, {"x": x})
    mod = prepare(m, "host").mod
    assert count_ops(mod, "relax.nn.conv2d_transpose") == 0 and count_ops(mod, "relax.nn.conv2d") == 1
    assert_matches_onnxruntime(m, {"x": x}, disabled=("ConvTransposeToConv",))


@pytest.mark.parametrize("case", [
    dict(c=4, o=3, hw=(6, 6), kernel=(3, 3), strides=(2, 2)),  # overlapping taps
    dict(c=4, o=3, hw=(6, 6), kernel=(2, 2), strides=(2, 2), pads=(1, 1, 1, 1)),
], ids=["stride-lt-kernel", "padded"])
def test_other_transposed_convs_are_declined_and_still_right(case):
    m = conv_t_model(**case)
    x = RNG.standard_normal((1, case["c"], *case["hw"])).astype("float32")
    prepared = prepare(m, "host")
    assert count_ops(prepared.mod, "relax.nn.conv2d_transpose") == 1
    record = next(r for r in prepared.records if r.name == "ConvTransposeToConv")
    assert record.stats["declined"], record
    assert_matches_onnxruntime(m, {"x": x})
