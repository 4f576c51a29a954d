"""QuantizeBeforeConcat: quantize(concat(a, b)) -> concat(quantize(a), quantize(b)), exact."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper
from onnx import numpy_helper as nh

from lwc import driver
from lwc.frontend import import_model
from lwc.passes._qdq import count_ops
from lwc.passes.quantize_before_concat import QuantizeBeforeConcat

from qdq_models import _qdq, ort_run


def concat_model(per_channel: bool = False, seed: int = 0) -> onnx.ModelProto:
    """x -> (x + c, x * d, nearest x2 upsample of a 2x2 max pool of x) -> concat -> QDQ
    (uint8, per tensor or per channel) -> QDQ conv 3x3 12->8 -> y (the shape of PP-OCRv4 det's neck)."""
    rng = np.random.default_rng(seed)
    w_q = rng.integers(-127, 128, size=(8, 12, 3, 3)).astype(np.int8)
    inits = [nh.from_array(rng.normal(0, 1, (1, 4, 1, 1)).astype(np.float32), "c"),
             nh.from_array(rng.uniform(0.5, 2, (1, 4, 1, 1)).astype(np.float32), "d"),
             nh.from_array(np.array([1, 1, 2, 2], np.float32), "up"),
             nh.from_array(w_q, "w_q"), nh.from_array(np.geomspace(0.002, 0.02, 8).astype(np.float32), "w_s"),
             nh.from_array(np.zeros(8, np.int8), "w_z")]
    nodes = [helper.make_node("Add", ["x", "c"], ["a"]), helper.make_node("Mul", ["x", "d"], ["b"]),
             helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Resize", ["p", "", "up"], ["u"], mode="nearest"),
             helper.make_node("Concat", ["a", "b", "u"], ["cat"], axis=1)]
    if per_channel:
        inits += [nh.from_array(np.linspace(0.02, 0.05, 12).astype(np.float32), "cat_s"),
                  nh.from_array(np.full(12, 128, np.uint8), "cat_z")]
        nodes += [helper.make_node("QuantizeLinear", ["cat", "cat_s", "cat_z"], ["cat_q"], axis=1),
                  helper.make_node("DequantizeLinear", ["cat_q", "cat_s", "cat_z"], ["cat_dq"], axis=1)]
    else:
        q_inits, q_nodes = _qdq("cat", 0.03, 128, np.uint8)
        inits += q_inits
        nodes += q_nodes
    nodes += [helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w_dq"], axis=0),
              helper.make_node("Conv", ["cat_dq", "w_dq"], ["y"], kernel_shape=[3, 3], pads=[1] * 4)]
    graph = helper.make_graph(nodes, "qdq_concat",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _moved(model):
    mod = import_model(model).mod
    p = QuantizeBeforeConcat()
    return p(mod), p


def test_per_tensor_quantize_moves_into_each_concat_input():
    mod, p = _moved(concat_model())
    assert p.moved == 1 and p.declined == []
    text = mod.script()
    assert count_ops(mod, "relax.quantize") == 3  # one per concat input
    concat = next(line for line in text.splitlines() if "R.concat(" in line)
    assert 'dtype="uint8"' in concat  # the concat now moves the quantized bytes


def test_per_channel_quantize_stays():
    mod, p = _moved(concat_model(per_channel=True))
    assert p.moved == 0 and count_ops(mod, "relax.quantize") == 1


def test_compiled_output_is_bit_identical_to_the_unmoved_graph_and_matches_onnxruntime():
    """The move is exact: the int8 build equals the build with the pass disabled bit for
    bit (inputs past both ends of the uint8 range included); and it is onnxruntime's QDQ
    graph up to the quantized conv input being one step off in places."""
    model = concat_model()
    x = np.random.default_rng(1).normal(0, 2.5, (1, 4, 8, 8)).astype(np.float32)
    x[0, 0, 0, :2] = [10.0, -10.0]  # clamped at 255 and 0
    moved = driver.compile(model, "host", use_tuning_logs=False)
    kept = driver.compile(model, "host", use_tuning_logs=False, disabled_passes=("QuantizeBeforeConcat",))
    assert "QuantizeBeforeConcat" in moved.passes and "QuantizeBeforeConcat" not in kept.passes
    [a], [b] = moved.run({"x": x}), kept.run({"x": x})
    np.testing.assert_array_equal(a, b)
    ref = ort_run(model, {"x": x})[0]
    w = {t.name: nh.to_array(t) for t in model.graph.initializer}
    w_dq = w["w_q"].astype(np.float32) * w["w_s"].reshape(-1, 1, 1, 1)
    one_step = 0.03 * np.abs(w_dq).sum(axis=(1, 2, 3)).max()  # every input one step off
    assert np.abs(a - ref).max() <= one_step
