"""FuseRequantize: int32 accumulator -> float epilogue -> quantize  ==>  integer requantize.

Matches what :mod:`lwc.passes.lower_qdq_conv2d` and :mod:`lwc.passes.lower_qdq_matmul`
leave behind when the next op quantizes again::

    y = quantize(relu?(astype(acc, "float32") * s + b?), s_y, z_y)

(relu also in PreserveNaN's guarded form ``where(isnan(x), x, relu(x))``)

and replaces it with fixed-point arithmetic on the accumulator, as in TFLite/gemmlowp
(Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", CVPR 2018, section 2.2)::

    M = s / s_y = M0 * 2**-n            M0 an int32 in [2**30, 2**31)  (per channel)
    acc' = acc + round_half_even(b / s)                          (bias in the int32 domain)
    y = clamp(((acc' * M0 + 2**(n-1)) >> n) + z_y, lo, hi)       (int64 product, one shift)

Rounding mode: one rounding, ties toward +infinity, exactly TFLite's
``MultiplyByQuantizedMultiplier`` when built with ``TFLITE_SINGLE_ROUNDING``
(tensorflow/lite/kernels/internal/common.h). ONNX QuantizeLinear rounds x / s_y half to
even in float; the two differ only on exact ties and by the 31-bit precision of M0, i.e.
by at most one quantization step. ``relu`` becomes lo = z_y (q(0)); lo/hi are otherwise the
output dtype's range.

Preconditions: acc is int32; s and b constant; s_y, z_y constant per-tensor; output int8
or uint8; |b / s| < 2**31.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from lwc.passes._qdq import const_value, dtype_of, qparams, rewrite_matches

NAME = "FuseRequantize"
_RANGE = {"int8": (-128, 127), "uint8": (0, 255)}


def _pattern():
    acc = wildcard()
    scale = is_const()
    mul = is_op("relax.multiply")(is_op("relax.astype")(acc), scale)
    bias = wildcard()
    with_bias = is_op("relax.add")(mul, bias)
    pre = with_bias | mul
    relu = is_op("relax.nn.relu")(pre)
    # lwc's PreserveNaN writes relu as where(isnan(x), x, relu(x)); an integer
    # accumulator holds no NaN, so the guard goes away with the float epilogue
    guarded = is_op("relax.where")(is_op("relax.isnan")(pre), pre, relu)
    quant = is_op("relax.quantize")(guarded | relu | pre, wildcard(), wildcard())
    return {"acc": acc, "scale": scale, "bias": bias, "with_bias": with_bias, "relu": relu, "quant": quant}


def fixed_point_multiplier(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M0, n) with m ~= M0 * 2**-n, M0 in [2**30, 2**31), 1 <= n <= 62 (int64 arrays)."""
    m = np.asarray(m, dtype=np.float64)
    frac, exp = np.frexp(m)  # m = frac * 2**exp, frac in [0.5, 1)
    m0 = np.round(frac * 2.0**31).astype(np.int64)
    overflow = m0 == 2**31
    m0[overflow] //= 2
    exp = exp.astype(np.int64) + overflow
    shift = 31 - exp
    # tiny multipliers: keep the shift within int64 by dropping low bits of M0
    excess = np.clip(shift - 62, 0, None)
    m0 = m0 >> excess
    shift = shift - excess
    zero = m <= 0
    m0[zero], shift[zero] = 0, 1
    return m0, np.clip(shift, 1, 62)


def check(m: dict, p: dict, var2val: dict) -> str | None:
    """Why this quantize cannot be fused into an integer requantize, or None."""
    if dtype_of(m[p["acc"]]) != "int32":
        return "the epilogue does not start from an int32 accumulator"
    quant = m[p["quant"]]
    out_dtype = str(quant.attrs.out_dtype)
    if out_dtype not in _RANGE:
        return f"quantizes to {out_dtype}"
    qy = qparams(quant, var2val)
    if qy is None or not qy.per_tensor:
        return "output scale/zero point not constant per-tensor"
    if p["with_bias"] in m:
        bias = const_value(m[p["bias"]], var2val)
        if bias is None:
            return "bias is not constant"
        scale = const_value(m[p["scale"]], var2val)
        if np.any(np.abs(bias / np.maximum(scale, 1e-30)) >= 2**31):
            return "bias does not fit the int32 accumulator"
    return None


def requantize(m: dict, p: dict, var2val: dict) -> relax.Expr:
    """The integer requantization (see the module docstring)."""
    quant = m[p["quant"]]
    qy = qparams(quant, var2val)
    out_dtype = str(quant.attrs.out_dtype)
    scale = const_value(m[p["scale"]], var2val).astype(np.float64)
    acc = relax.op.astype(m[p["acc"]], "int64")
    if p["with_bias"] in m:
        bias = const_value(m[p["bias"]], var2val).astype(np.float64)
        bias_q = np.round(bias / np.maximum(scale, 1e-30)).astype(np.int64)
        acc = relax.op.add(acc, relax.const(bias_q, "int64"))
    m0, shift = fixed_point_multiplier(scale / np.float64(qy.scale[0]))
    rounding = np.left_shift(np.int64(1), shift - 1)
    y = relax.op.add(relax.op.multiply(acc, relax.const(m0, "int64")), relax.const(rounding, "int64"))
    y = relax.op.right_shift(y, relax.const(shift, "int64"))
    z_y = int(qy.zero_point[0])
    lo, hi = _RANGE[out_dtype]
    if p["relu"] in m:
        lo = max(lo, z_y)
    y = relax.op.add(y, relax.const(z_y, "int64"))
    y = relax.op.minimum(relax.op.maximum(y, relax.const(lo, "int64")), relax.const(hi, "int64"))
    return relax.op.astype(y, out_dtype)


@tvm.transform.module_pass(opt_level=0, name=NAME)
class FuseRequantize:
    """Turn float epilogue + quantize into fixed-point integer requantization.

    ``declined`` lists ``(quantize text, reason)`` for each candidate left in float.
    """

    def __init__(self):
        self.declined: list[tuple[str, str]] = []
        self.fused = 0

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        p = _pattern()
        return rewrite_matches(
            mod, p["quant"],
            lambda m, var2val: check(m, p, var2val),
            lambda m, var2val: requantize(m, p, var2val),
            "quantize", self, "fused",
        )
