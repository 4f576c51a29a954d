"""FuseHardSwish: recognise x * clip(x + 3, 0, 6) / 6 and make it one kernel.

Math (Howard et al. 2019, MobileNetV3; ONNX HardSwish-14)::

    hard_swish(x) = x * min(max(x + 3, 0), 6) / 6

Paddle exports it as ``Add -> Clip -> Mul -> Div`` (PP-OCR has one per block); TVM's
importer keeps five Relax ops plus the Clip's NaN guards. After CanonicalizeClip the
chain is matched in any of the orders exporters write it:

    divide(multiply(x, C), 6) | multiply(multiply(x, C), 1/6) | multiply(x, divide(C, 6))
    with C = clip(add(x, 3), 0, 6)

and replaced by ``call_tir(hard_swish, (x,))`` (:mod:`lwc.kernels.elementwise`; NaN-preserving,
elementwise, so FuseOps still fuses it into the producing conv).
Declines: the two ``x`` are different values; constants other than 3, 0, 6 (1/6);
a tensor of unknown rank. Symbolic dims (a dynamic-dims compile) are kept: the kernel
takes them from ``x``.

Before::  lv5 = add(lv2, 3); lv9 = clip(lv5, 0, 6); lv10 = multiply(lv2, lv9); lv11 = divide(lv10, 6)
After::   lv11 = call_tir(hard_swish, (lv2,))
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from lwc.kernels.elementwise import KernelTable, hard_swish_body
from lwc.passes._support import (
    Bindings,
    PassStats,
    rewrite_functions,
    scalar_is,
    tensor_dims,
    tensor_dtype,
    tensor_shape,
)


def _mul(a, b):
    return is_op("relax.multiply")(a, b) | is_op("relax.multiply")(b, a)


@tvm.transform.module_pass(opt_level=0, name="FuseHardSwish")
class FuseHardSwish:
    """Replace x * clip(x + 3, 0, 6) / 6 chains by one hard_swish kernel."""

    def __init__(self):
        self.stats = PassStats()

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        self.stats = PassStats()
        table = KernelTable("hard_swish", mod)
        mod = rewrite_functions(mod, lambda f: self._rewrite(f, table))
        return table.add_to(mod)

    def _rewrite(self, func: relax.Function, table: KernelTable) -> relax.Function:
        x, x2, three, six, sixth = wildcard(), wildcard(), is_const(), is_const(), is_const()
        clip = is_op("relax.clip")(is_op("relax.add")(x2, three), wildcard(), wildcard())
        root = (
            is_op("relax.divide")(_mul(x, clip), six)
            | _mul(_mul(x, clip), sixth)
            | _mul(x, is_op("relax.divide")(clip, six))
        )
        bindings = Bindings(func)

        def replace(expr, m):
            where = bindings.name(expr)
            if not m[x].same_as(m[x2]):
                return expr  # x * clip(y + 3) with y != x: not a hard-swish
            clip_call = m[clip]
            checks = [
                (scalar_is(m[three], 3.0), "added constant is not 3"),
                (scalar_is(clip_call.args[1], 0.0) and scalar_is(clip_call.args[2], 6.0),
                 "clip bounds are not [0, 6]"),
                (scalar_is(m[six], 6.0) if six in m else scalar_is(m[sixth], 1 / 6),
                 "scale is not 1/6"),
            ]
            shape, dtype = tensor_shape(expr), tensor_dtype(expr)  # shape None: symbolic dims
            checks.append((tensor_dims(expr) is not None, "rank is not known"))
            for ok, reason in checks:
                if not ok:
                    self.stats.declined.append((where, reason))
                    return expr
            self.stats.changed["hard_swish fused"] += 1
            return table.call("hard_swish", hard_swish_body, m[x], shape, dtype)

        return rewrite_call(root, replace, func)
