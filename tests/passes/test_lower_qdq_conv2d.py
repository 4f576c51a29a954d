"""LowerQdqConv2d: structural, negative and numerical (case Q1 and its kind)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from lwc.frontend import import_model
from lwc.passes._qdq import count_ops
from lwc.passes.lower_qdq_conv2d import LowerQdqConv2d

from qdq_models import conv_model, ort_run


def _int_convs(mod) -> int:
    from lwc.quantize.lowering import _count_int

    return _count_int(mod, "relax.nn.conv2d")


def test_structural_q1_conv_becomes_integer():
    mod = import_model(conv_model()).mod
    p = LowerQdqConv2d()
    out = p(mod)
    assert p.lowered == 1 and not p.declined
    assert _int_convs(out) == 1
    assert count_ops(out, "relax.nn.pad") == 1  # padded with the zero point, not 0
    assert count_ops(out, "relax.dequantize") == count_ops(mod, "relax.dequantize") - 2


def test_negative_asymmetric_weights_declined():
    mod = import_model(conv_model(w_zp=1)).mod
    p = LowerQdqConv2d()
    out = p(mod)
    tvm.ir.assert_structural_equal(out, mod)
    assert p.lowered == 0 and "zero point" in p.declined[0][1]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),  # case Q1: depthwise, per-channel scales 0.001..0.05, uint8 zp 128
        dict(groups=2, stride=2),  # grouped, strided
        dict(groups=1, x_zp=-7, x_dtype=np.int8, relu=False),  # int8 input with a zero point
        dict(groups=8, x_zp=17, pads=0),  # odd uint8 zero point, no padding
    ],
    ids=["q1-depthwise", "grouped-stride2", "int8-zp-no-relu", "uint8-zp17-nopad"],
)
def test_numerical_within_one_output_step_of_onnxruntime(kwargs):
    """Within one output step of the QDQ graph as onnxruntime evaluates it op by op, and of
    onnxruntime's own int8 kernels where those are exact (tests/ort_reference.py: without
    VNNI its x86 u8s8 kernels saturate, off by up to 12.75 here on Zen 3)."""
    from lwc import driver
    from ort_reference import fused_int8_is_exact

    model = conv_model(**kwargs)
    result = driver.compile(model, "host")
    q = result.describe()["quantization"]["lowering"]
    assert q["int8_conv2d"] == 1 and q["fp32_conv2d"] == 0
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.uniform(-2.7, 2.7, (1, 8, 16, 16)).astype(np.float32)
        got = result.run({"x": x})[0]
        step = 0.05
        assert np.abs(got - ort_run(model, {"x": x})[0]).max() <= step + 1e-6
        if fused_int8_is_exact():
            assert np.abs(got - ort_run(model, {"x": x}, fused=True)[0]).max() <= step + 1e-6
