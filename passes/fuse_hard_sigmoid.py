"""FuseHardSigmoid: recognise clip(alpha * x + beta, 0, 1) and make it one kernel.

Math (ONNX HardSigmoid-6; Paddle's hardsigmoid uses alpha = 0.2, beta = 0.5 and PP-OCR's
squeeze-excite gates are full of it)::

    hard_sigmoid(x) = max(0, min(1, alpha * x + beta))

Matched forms: ``clip(add(multiply(alpha, x), beta), 0, 1)`` with the multiply in either
order (what TVM's importer emits for ONNX HardSigmoid, and what exporters write by hand),
and ``clip(add(divide(x, d), beta), 0, 1)`` (alpha = 1/d). Replaced by
``call_tir(hard_sigmoid, (x,))`` with alpha and beta baked in (:mod:`lwc.kernels.elementwise`;
NaN in gives NaN out, as in onnxruntime).
Declines: alpha or beta not scalar constants, clip bounds other than [0, 1], dynamic shape.

Before::  lv28 = multiply(0.2, lv27); lv29 = add(lv28, 0.5); lv30 = clip(lv29, 0, 1)
After::   lv30 = call_tir(hard_sigmoid, (lv27,))
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from lwc.kernels.elementwise import KernelTable, hard_sigmoid_body
from lwc.passes._support import (
    Bindings,
    PassStats,
    prim_value,
    rewrite_functions,
    scalar_is,
    tensor_dims,
    tensor_dtype,
    tensor_shape,
)


@tvm.transform.module_pass(opt_level=0, name="FuseHardSigmoid")
class FuseHardSigmoid:
    """Replace clip(alpha * x + beta, 0, 1) by one hard_sigmoid kernel."""

    def __init__(self):
        self.stats = PassStats()

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        self.stats = PassStats()
        table = KernelTable("hard_sigmoid", mod)
        mod = rewrite_functions(mod, lambda f: self._rewrite(f, table))
        return table.add_to(mod)

    def _rewrite(self, func: relax.Function, table: KernelTable) -> relax.Function:
        x, alpha, divisor, beta = wildcard(), is_const(), is_const(), is_const()
        scaled = (
            is_op("relax.multiply")(alpha, x)
            | is_op("relax.multiply")(x, alpha)
            | is_op("relax.divide")(x, divisor)
        )
        root = is_op("relax.clip")(is_op("relax.add")(scaled, beta), wildcard(), wildcard())
        bindings = Bindings(func)

        def replace(expr, m):
            where = bindings.name(expr)
            a = prim_value(m[alpha]) if alpha in m else None
            if divisor in m:
                d = prim_value(m[divisor])
                a = None if not d else 1.0 / d
            b = prim_value(m[beta])
            shape, dtype = tensor_shape(expr), tensor_dtype(expr)  # shape None: symbolic dims
            for ok, reason in (
                (a is not None, "alpha is not a scalar constant"),
                (b is not None, "beta is not a scalar constant"),
                (scalar_is(expr.args[1], 0.0) and scalar_is(expr.args[2], 1.0),
                 "clip bounds are not [0, 1]"),
                (tensor_dims(expr) is not None, "rank is not known"),
            ):
                if not ok:
                    self.stats.declined.append((where, reason))
                    return expr
            self.stats.changed["hard_sigmoid fused"] += 1
            body = hard_sigmoid_body(a, b)
            return table.call(f"hard_sigmoid_{a!r}_{b!r}", body, m[x], shape, dtype)

        return rewrite_call(root, replace, func)
