"""LowerQdqMatmul: ``matmul(dequantize(xq), dequantize(Wq))`` -> int8 matmul, int32 accumulate.

Math (x per-tensor scale s_x, zero point z_x; W a constant [K, N] matrix, symmetric
per-column scales s_w[n] or one scale; ONNX MatMul and Gemm both import as matmul, Gemm
with ``transB`` as ``permute_dims`` of the weight, which is folded here):

    (s_x (xq - z_x)) @ (s_w Wq) [.., n] = s_x s_w[n] * ((xq @ Wq)[.., n] - z_x * sum_k Wq[k, n])

Before::   y = matmul(dequantize(xq, s_x, z_x), permute_dims?(dequantize(Wq, s_w, 0)))
After::    acc = matmul(xq, Wq', out_dtype="int32") - z_x * colsum(Wq')
           y   = astype(acc, "float32") * (s_x * s_w)      # float epilogue, see FuseRequantize

Preconditions: x int8/uint8 with constant per-tensor scale/zero point; the weight a 2-D
constant int8 tensor (after an optional transpose) with zero points 0 and scales per
tensor or per output column.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from lwc.passes._qdq import QParams, bound_value, const_value, dtype_of, lower_matches, qparams

NAME = "LowerQdqMatmul"


def _pattern():
    x_dq = is_op("relax.dequantize")(wildcard(), wildcard(), wildcard())
    weight = wildcard()
    mm = is_op("relax.matmul")(x_dq, weight)
    return mm, x_dq, weight


def int_weight(expr, var2val: dict) -> tuple[np.ndarray, QParams] | str:
    """(int8 [K, N] weight, its qparams with axis in the [K, N] frame) or a reason."""
    axes = None
    expr = bound_value(expr, var2val)
    if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.permute_dims":
        axes = [1, 0] if expr.attrs.axes is None else [int(a) for a in expr.attrs.axes]
        expr = bound_value(expr.args[0], var2val)
    if not (isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.dequantize"):
        return "weight is not a dequantized constant"
    wq = const_value(expr.args[0], var2val)
    qp = qparams(expr, var2val)
    if wq is None or qp is None:
        return "weight or its scale is not constant"
    if wq.dtype != np.int8 or wq.ndim != 2:
        return f"weight is {wq.dtype} with rank {wq.ndim} (needs 2-D int8)"
    if np.any(qp.zero_point != 0):
        return "weight zero point is not 0 (asymmetric weights)"
    axis = qp.axis
    if axes is not None:
        wq = np.transpose(wq, axes)
        if axis is not None:
            axis = axes.index(axis % 2)
    if axis is not None and axis % 2 != 1:
        return "weight scales are per input row, not per output column"
    return wq, QParams(qp.scale, qp.zero_point, axis)


def check(mm: relax.Call, x_dq: relax.Call, weight, var2val: dict) -> str | None:
    """Why this matmul cannot run on integer kernels, or None when it can."""
    if dtype_of(x_dq.args[0]) not in ("int8", "uint8"):
        return f"input is {dtype_of(x_dq.args[0])}, not int8/uint8"
    xq = qparams(x_dq, var2val)
    if xq is None or not xq.per_tensor:
        return "input scale/zero point not constant per-tensor"
    w = int_weight(weight, var2val)
    if isinstance(w, str):
        return w
    if dtype_of(mm) != "float32":
        return f"matmul output is {dtype_of(mm)}"
    return None


def lower(mm: relax.Call, x_dq: relax.Call, weight, var2val: dict) -> relax.Expr:
    xq = qparams(x_dq, var2val)
    wq, wqp = int_weight(weight, var2val)
    n = wq.shape[1]
    z_x = int(xq.zero_point[0])
    acc = relax.op.matmul(x_dq.args[0], relax.const(wq.astype(np.int8)), out_dtype="int32")
    if z_x != 0:
        colsum = z_x * wq.astype(np.int64).sum(axis=0)
        acc = relax.op.subtract(acc, relax.const(colsum.astype(np.int32)))
    w_scale = np.broadcast_to(wqp.scale, (n,)) if wqp.per_tensor else wqp.scale
    scale = (np.float64(xq.scale[0]) * w_scale.astype(np.float64)).astype(np.float32)
    return relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(scale))


@tvm.transform.module_pass(opt_level=0, name=NAME)
class LowerQdqMatmul:
    """Rewrite dequantize -> matmul with a constant int8 weight into an integer matmul.

    ``declined`` lists ``(matmul text, reason)`` for QDQ matmuls left in floating point.
    """

    def __init__(self):
        self.declined: list[tuple[str, str]] = []
        self.lowered = 0

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        return lower_matches(mod, _pattern(), check, lower, "matmul", self)
