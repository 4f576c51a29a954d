"""lwc.onnx_fold_if: If on a constant condition -> the branch it takes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from lwc.onnx_fold_if import fold_constant_ifs
from onnx import TensorProto, helper, numpy_helper


def _branch(name: str, op: str) -> onnx.GraphProto:
    out = helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, None)
    return helper.make_graph([helper.make_node(op, ["x"], [f"{name}_y"])], name, [], [out])


def _model(cond_nodes, cond: str, inputs, initializers=()) -> onnx.ModelProto:
    node = helper.make_node("If", [cond], ["y"], then_branch=_branch("then", "Relu"),
                            else_branch=_branch("else", "Neg"))
    graph = helper.make_graph(
        list(cond_nodes) + [node], "g", inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _x(shape=(2, 3)):
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))


def _run(model, x):
    return ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]


def test_constant_condition_inlines_the_taken_branch():
    sr = numpy_helper.from_array(np.array(16000, np.int64), "sr")
    k = numpy_helper.from_array(np.array(8000, np.int64), "k")
    model = _model([helper.make_node("Equal", ["sr", "k"], ["c"])], "c", [_x()], [sr, k])

    folded = fold_constant_ifs(model)

    ops = [n.op_type for n in folded.graph.node]
    assert "If" not in ops and "Neg" in ops and "Relu" not in ops  # 16000 != 8000: else
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(_run(folded, x), _run(model, x))


def test_condition_on_a_static_shape_folds_with_input_shapes():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Constant", [], ["i"], value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Gather", ["s", "i"], ["d"]),
        helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array(1, np.int64))),
        helper.make_node("Equal", ["d", "one"], ["c"]),
    ]
    model = _model(nodes, "c", [_x(("n", 3))])

    assert "If" in [n.op_type for n in fold_constant_ifs(model).graph.node]  # shape unknown
    folded = fold_constant_ifs(model, {"x": [1, 3]})

    assert [n.op_type for n in folded.graph.node].count("If") == 0
    x = np.random.default_rng(1).standard_normal((1, 3)).astype(np.float32)
    np.testing.assert_array_equal(_run(folded, x), _run(model, x))


def test_condition_from_an_input_is_left_alone():
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    model = _model([], "c", [_x(), cond])

    folded = fold_constant_ifs(model)

    assert [n.op_type for n in folded.graph.node] == ["If"]
    assert folded == model or folded.graph.node[0] == model.graph.node[0]
