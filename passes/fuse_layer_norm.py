"""FuseLayerNorm: recognise LayerNorm written as mean/sub/pow/mean/add/sqrt/div.

Math (Ba et al. 2016; ONNX LayerNormalization-17) over the last axes A::

    mu = mean_A(x);  d = x - mu;  var = mean_A(d^2)
    y = d / sqrt(var + eps) * gamma + beta

Exporters before opset 17 (PP-OCRv4's SVTR neck) write it out elementwise:
ReduceMean -> Sub -> Pow(2) (or d*d) -> ReduceMean -> Add(eps) -> Sqrt -> Div -> Mul -> Add.
The match becomes ``R.nn.layer_norm(x, gamma, beta, axes, eps)`` (gamma = 1, beta = 0 when
the trailing Mul/Add are absent; a Mul/Add that follows and is not a constant of the
normalized shape is left outside).
Declines: the two means reduce different axes, or not the trailing axes, or lack
keepdims; the power is not 2; eps is not a scalar constant; gamma/beta have another shape.

Before::  lv1 = mean(x, [-1]); lv2 = subtract(x, lv1); lv3 = power(lv2, 2); lv4 = mean(lv3, [-1]);
          lv5 = add(lv4, 1e-5); lv6 = sqrt(lv5); lv7 = divide(lv2, lv6); lv8 = multiply(lv7, g); lv9 = add(lv8, b)
After::   lv9 = layer_norm(x, g, b, axes=[-1], epsilon=1e-5)
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from lwc.passes._patterns import add, mul
from lwc.passes._support import (
    Bindings,
    FunctionRewrite,
    const,
    const_value,
    prim_value,
    scalar_is,
    tensor_dims,
    tensor_dtype,
)


def _axes(call, ndim: int) -> list[int] | None:
    if call.attrs.axis is None or not bool(call.attrs.keepdims):
        return None
    return sorted(int(a) % ndim for a in call.attrs.axis)


@tvm.transform.module_pass(opt_level=0, name="FuseLayerNorm")
class FuseLayerNorm(FunctionRewrite):
    """Replace the elementwise LayerNorm chain by one layer_norm op."""

    def _rewrite(self, func: relax.Function) -> relax.Function:
        x, x2, eps, two, gamma, beta = (wildcard(), wildcard(), is_const(), is_const(),
                                        is_const(), is_const())
        mean1 = is_op("relax.mean")(x)
        diff = is_op("relax.subtract")(x2, mean1)
        square = is_op("relax.power")(diff, two) | is_op("relax.multiply")(diff, diff)
        mean2 = is_op("relax.mean")(square)
        norm = is_op("relax.divide")(diff, is_op("relax.sqrt")(add(mean2, eps)))
        scaled = mul(norm, gamma)
        # longest form first: matching the bare chain first would leave Mul/Add outside
        for root in (add(scaled, beta), scaled, norm):
            func = self._rewrite_one(func, root, x, x2, eps, two, gamma, beta, mean1, mean2)
        return func

    def _rewrite_one(self, func, root, x, x2, eps, two, gamma, beta, mean1, mean2):
        bindings = Bindings(func)

        def replace(expr, m):
            if not m[x].same_as(m[x2]):
                return expr
            where = bindings.name(expr)
            # a symbolic dim (a dynamic-dims compile) is fine outside the normalized axes
            shape, dtype = tensor_dims(m[x]), tensor_dtype(m[x])
            ndim = len(shape) if shape else 0
            axes1 = _axes(m[mean1], ndim) if shape else None
            axes2 = _axes(m[mean2], ndim) if shape else None
            epsilon = prim_value(m[eps])
            reasons = [
                (shape is not None, "shape is not static"),
                (axes1 is not None and axes1 == axes2, "means reduce different axes or drop them"),
                (axes1 is not None and axes1 == list(range(ndim - len(axes1 or []), ndim)),
                 "normalized axes are not the trailing ones"),
                (two not in m or scalar_is(m[two], 2.0), "power is not 2"),
                (epsilon is not None, "eps is not a scalar constant"),
            ]
            for ok, reason in reasons:
                if not ok:
                    self.stats.declined.append((where, reason))
                    return expr
            norm_shape = tuple(shape[a] for a in axes1)
            if None in norm_shape:
                self.stats.declined.append((where, "a normalized axis is symbolic"))
                return expr
            g = self._param(m, gamma, norm_shape, dtype, 1.0)
            b = self._param(m, beta, norm_shape, dtype, 0.0)
            if g is None or b is None:
                self.stats.declined.append((where, f"gamma/beta are not of shape {list(norm_shape)}"))
                return expr
            self.stats.changed["layer_norm fused"] += 1
            axes = [a - ndim for a in axes1]
            return relax.op.nn.layer_norm(m[x], const(g), const(b), axes, epsilon)

        return rewrite_call(root, replace, func)

    @staticmethod
    def _param(m, pat, norm_shape, dtype, default):
        if pat not in m:
            return np.full(norm_shape, default, dtype)
        value = const_value(m[pat])
        if value is None:
            return None
        squeezed = value.reshape(value.shape[value.ndim - len(norm_shape):]) if (
            value.ndim >= len(norm_shape) and all(d == 1 for d in value.shape[:value.ndim - len(norm_shape)])
        ) else None
        if squeezed is None:
            return None
        return np.broadcast_to(squeezed, norm_shape).astype(dtype).copy() if squeezed.shape in (
            norm_shape, (1,) * len(norm_shape)) else None
