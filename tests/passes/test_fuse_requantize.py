"""FuseRequantize: fixed-point multiplier, structural and negative tests."""

from __future__ import annotations

import numpy as np
import tvm

from lwc.frontend import import_model
from lwc.passes._qdq import count_ops
from lwc.passes.fuse_requantize import FuseRequantize, fixed_point_multiplier
from lwc.passes.lower_qdq_conv2d import LowerQdqConv2d

from qdq_models import conv_model


def test_fixed_point_multiplier_is_accurate():
    m = np.array([1e-9, 3.7e-5, 0.02, 0.4999, 0.5, 0.99999999, 1.0, 3.3])
    m0, shift = fixed_point_multiplier(m)
    assert np.all((shift >= 1) & (shift <= 62))
    approx = m0.astype(np.float64) * 2.0 ** (-shift.astype(np.float64))
    np.testing.assert_allclose(approx[1:], m[1:], rtol=2**-29)
    assert np.all(m0[1:] >= 2**30) and np.all(m0 < 2**31)


def test_structural_conv_relu_quantize_fused():
    mod = LowerQdqConv2d()(import_model(conv_model()).mod)
    p = FuseRequantize()
    out = p(mod)
    assert p.fused == 1
    assert count_ops(out, "relax.quantize") == 1  # only the model input's
    assert count_ops(out, "relax.right_shift") == 1


def test_negative_float_quantize_untouched():
    # without the integer conv there is no int32 accumulator to requantize
    mod = import_model(conv_model()).mod
    p = FuseRequantize()
    out = p(mod)
    tvm.ir.assert_structural_equal(out, mod)
    assert p.fused == 0
