"""NaN must survive fusion: Relu/Clip/Max on NaN give NaN as in onnxruntime."""

import numpy as np
from onnx import helper
from support import assert_unchanged, model, relax_module, run_both, tensor

from lwc.passes._support import count_ops
from lwc.passes.preserve_nan import PreserveNaN

SHAPE = [1, 4, 2, 2]


def conv_then_activations():
    """conv -> Relu / Clip(0, 6) / Max(., 0.5) / HardSigmoid / HardSwish: all fusable into the conv."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Relu", ["c"], ["relu"]),
        helper.make_node("Clip", ["c", "lo", "hi"], ["relu6"]),
        helper.make_node("Max", ["c", "half"], ["max"]),
        helper.make_node("Min", ["c", "half"], ["min"]),
        helper.make_node("HardSigmoid", ["c"], ["hsig"]),
        helper.make_node("HardSwish", ["c"], ["hswish"]),
    ]
    inits = [tensor("w", np.eye(4).reshape(4, 4, 1, 1)), tensor("lo", np.array(0.0)),
             tensor("hi", np.array(6.0)), tensor("half", np.array(0.5))]
    outs = {n: SHAPE for n in ("relu", "relu6", "max", "min", "hsig", "hswish")}
    return model(nodes, {"x": SHAPE}, outs, inits, opset=14)


def test_nan_propagates_like_onnxruntime_with_fusion_on():
    x = np.arange(16, dtype=np.float32).reshape(SHAPE) - 8
    x[0, 0, 0, 0] = x[0, 1, 1, 1] = np.nan
    # the identity weight is 75% zero: --sparsity auto may time a BSR kernel faster, and a
    # sparse kernel skips the zero weights, so NaN * 0 is never computed (docs/sparsity.md);
    # this test is about fusion, so the sparsity stage stays out of it
    ref, got = run_both(conv_then_activations(), {"x": x}, disabled=("Conv1x1ToSparse", "DenseToSparse"))
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(r))
        np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-6)


def test_guards_relu():
    onnx_model = model([helper.make_node("Relu", ["x"], ["y"])], {"x": SHAPE}, {"y": SHAPE})
    pass_obj = PreserveNaN()
    mod = pass_obj(relax_module(onnx_model))
    assert count_ops(mod, "relax.isnan") == 1 and count_ops(mod, "relax.where") == 1
    assert pass_obj.stats.changed["relu guarded"] == 1


def test_leaves_integer_max_alone():
    onnx_model = model([helper.make_node("Cast", ["x"], ["i"], to=6),
                        helper.make_node("Max", ["i", "i"], ["m"]),
                        helper.make_node("Cast", ["m"], ["y"], to=1)], {"x": SHAPE}, {"y": SHAPE})
    assert_unchanged(PreserveNaN(), relax_module(onnx_model))
