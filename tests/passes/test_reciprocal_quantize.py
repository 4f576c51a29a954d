"""ReciprocalQuantize: quantize multiplies by 1/scale; structure, the unit scale left as an
immediate, the declined per-channel case, and the model against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import tvm
from onnx import TensorProto, helper
from onnx import numpy_helper as nh
from tvm import relax

from lwc import driver
from lwc.frontend import import_model
from lwc.passes._qdq import Constant, count_ops
from lwc.passes.lift_quant_params import LiftQuantParams
from lwc.passes.reciprocal_quantize import ReciprocalQuantize

from qdq_models import conv_model, ort_run


def _quantize_calls(mod) -> list:
    calls = []

    def visit(e):
        if isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.quantize":
            calls.append(e)

    relax.analysis.post_order_visit(mod["main"], visit)
    return calls


def test_quantize_multiplies_by_the_reciprocal_with_a_unit_scale():
    mod = import_model(conv_model(relu=False)).mod  # quantizes the input (scale 0.02) and the output (0.05)
    p = ReciprocalQuantize()
    out = p(mod)
    assert p.lowered == 2 and not p.declined
    assert count_ops(out, "relax.multiply") == count_ops(mod, "relax.multiply") + 2
    calls = _quantize_calls(out)
    assert [float(c.args[1].value.numpy()) for c in calls] == [1.0, 1.0]
    scales = sorted(float(c.args[1].value.numpy()) for c in _quantize_calls(mod))
    inverses = []

    def visit(e):
        if isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.multiply":
            b = e.args[1]
            if isinstance(b, Constant) and b.value.numpy().ndim == 0:
                inverses.append(float(b.value.numpy()))

    relax.analysis.post_order_visit(out["main"], visit)
    np.testing.assert_allclose(sorted(inverses), sorted(1 / s for s in scales), rtol=1e-7)


def test_unit_scale_stays_an_immediate_so_the_kernel_has_no_division():
    """After LiftQuantParams the zero point and 1/scale are kernel parameters (tuning records
    independent of the calibration), the unit scale an immediate that the legalization
    drops: TVM's quantize kernel rounds, adds the zero point and saturates, nothing else."""
    mod = LiftQuantParams()(ReciprocalQuantize()(import_model(conv_model(relu=False)).mod))
    legal = relax.transform.LegalizeOps()(mod)
    kernels = [f.script() for g, f in legal.functions_items() if g.name_hint.startswith("quantize")]
    assert len(kernels) == 1  # one kernel serves both quantizes: no scale in its TIR
    for text in kernels:
        assert "T.round(" in text and " / " not in text
    plain = relax.transform.LegalizeOps()(LiftQuantParams()(import_model(conv_model(relu=False)).mod))
    assert all(" / " in f.script() for g, f in plain.functions_items() if g.name_hint.startswith("quantize"))


def _per_channel_quantize() -> onnx.ModelProto:
    inits = [nh.from_array(np.array([0.02, 0.05], np.float32), "s"), nh.from_array(np.array([3, 7], np.uint8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "pc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_per_channel_quantize_is_declined_and_left_alone():
    mod = import_model(_per_channel_quantize()).mod
    p = ReciprocalQuantize()
    out = p(mod)
    assert p.lowered == 0 and len(p.declined) == 1
    tvm.ir.assert_structural_equal(out, mod)


def test_model_matches_onnxruntime_within_one_step_and_mostly_bit_equal():
    """The conv model compiled with and without the pass, on inputs that cover the whole
    uint8 range of its input quantize (the output's is fixed-point: FuseRequantize)."""
    model = conv_model(relu=False, hw=24, x_zp=3)
    fast = driver.compile(model, "host", use_tuning_logs=False)
    assert fast.quantization["lowering"]["ReciprocalQuantize"] == 1
    plain = driver.compile(model, "host", use_tuning_logs=False, disabled_passes=("ReciprocalQuantize",))
    rng = np.random.default_rng(7)
    step = 0.05
    for _ in range(3):
        x = rng.uniform(-0.2, 5.2, (1, 8, 24, 24)).astype(np.float32)
        got, ref = fast.run({"x": x})[0], plain.run({"x": x})[0]
        assert np.abs(got - ref).max() <= step + 1e-6
        assert np.mean(got == ref) > 0.999
        assert np.abs(got - ort_run(model, {"x": x})[0]).max() <= step + 1e-6
