"""RemoveZeroChannels: structural, negative and numerical tests on small ONNX models."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lwc import sparsity_analysis
from lwc.passes.remove_zero_channels import RemoveZeroChannels
from tests.conftest import TOL

DEAD = [1, 3, 6]


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def conv_chain(dead=DEAD, residual=False, seed=0):
    """x[1,3,8,8] -> Conv 3x3 (8) -> BN -> Relu -> depthwise 3x3 -> Mul(hswish-ish) -> Conv 1x1 (4) -> y.

    ``dead`` output channels of the first conv have zero weights and bias, and BN scale/shift
    zero. ``residual`` adds the first conv's output to a second conv's (non-zero) output.
    """
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((8, 3, 3, 3))
    b1 = rng.standard_normal(8)
    scale, shift = rng.uniform(0.5, 1.5, 8), rng.standard_normal(8)
    w1[dead], b1[dead], scale[dead], shift[dead] = 0, 0, 0, 0
    inits = [
        _init("w1", w1), _init("b1", b1), _init("s", scale), _init("t", shift),
        _init("m", rng.standard_normal(8)), _init("v", rng.uniform(0.5, 2, 8)),
        _init("wd", rng.standard_normal((8, 1, 3, 3))), _init("bd", np.zeros(8)),
        _init("three", [3.0]), _init("w3", rng.standard_normal((4, 8, 1, 1))),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "s", "t", "m", "v"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("Conv", ["r", "wd", "bd"], ["dw"], group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["dw", "three"], ["a"]),
        helper.make_node("Clip", ["a"], ["cl"]),
        helper.make_node("Mul", ["dw", "cl"], ["h"]),
    ]
    last = "h"
    if residual:
        inits.append(_init("w2", rng.standard_normal((8, 3, 1, 1))))
        nodes += [helper.make_node("Conv", ["x", "w2"], ["c2"]), helper.make_node("Add", ["h", "c2"], ["res"])]
        last = "res"
    nodes.append(helper.make_node("Conv", [last, "w3"], ["y"]))
    graph = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model


def run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def shapes(model):
    return {t.name: list(t.dims) for t in model.graph.initializer}


def test_structural_removes_dead_channels_everywhere():
    model = conv_chain()
    out = RemoveZeroChannels()(model)
    init = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    conv1, dw, conv3 = (init[n.input[1]] for n in out.graph.node if n.op_type == "Conv")
    assert conv1.shape == (5, 3, 3, 3)
    assert dw.shape == (5, 1, 3, 3)
    assert conv3.shape == (4, 5, 1, 1)
    bn = next(n for n in out.graph.node if n.op_type == "BatchNormalization")
    assert all(init[i].shape == (5,) for i in bn.input[1:])
    group = next(a.i for n in out.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group")
    assert group == 5
    assert sparsity_analysis.count_flops(out) < sparsity_analysis.count_flops(model)
    onnx.checker.check_model(out)


def test_input_model_is_not_mutated():
    model = conv_chain()
    before = model.SerializeToString()
    RemoveZeroChannels()(model)
    assert model.SerializeToString() == before


def test_numerical_identical_outputs():
    model = conv_chain()
    out = RemoveZeroChannels()(model)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), **TOL["fp32"])


def test_negative_residual_keeps_channels_and_says_why():
    model = conv_chain(residual=True)
    p = RemoveZeroChannels()
    out = p(model)
    assert out is model
    assert p.last_report.total_removed == 0
    (reason,) = p.last_report.kept_zero.values()
    assert "non-zero" in reason


def test_negative_no_zero_channels_unchanged():
    model = conv_chain(dead=[])
    assert RemoveZeroChannels()(model) is model


def test_negative_zero_conv_feeding_graph_output_stays():
    model = conv_chain()
    model.graph.output.append(helper.make_tensor_value_info("c1", TensorProto.FLOAT, [1, 8, 8, 8]))
    p = RemoveZeroChannels()
    assert p(model) is model
    assert "graph output" in next(iter(p.last_report.kept_zero.values()))


@pytest.mark.parametrize("dead", [[0], [0, 1, 2, 3, 4, 5, 6]])
def test_edge_channel_sets(dead):
    model = conv_chain(dead=dead)
    out = RemoveZeroChannels()(model)
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), **TOL["fp32"])
    assert shapes(out)[out.graph.node[0].input[1]][0] == 8 - len(dead)


def test_lwc_compile_matches_onnxruntime(tmp_path):
    """End to end through lwc.compile on host (small model: a few seconds)."""
    import lwc.driver
    from lwc import pipeline

    model = conv_chain()
    # the other lwc passes are not under test here
    result = lwc.driver.compile(model, "host", disabled_passes=tuple(pipeline.pass_names()))
    assert "RemoveZeroChannels" in result.passes
    info = result.extra["sparsity"]
    assert info["remove_zero_channels"]["removed_channels"] == len(DEAD)
    assert info["flops_after"] < info["flops_before"]
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    (y,) = result.run({"x": x})
    np.testing.assert_allclose(y, run(model, x), **TOL["fp32"])
