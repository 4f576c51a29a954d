"""CanonicalizeClip: turn the ONNX importer's Clip lowering back into one ``R.clip``.

TVM's ONNX importer lowers opset-11+ ``Clip(x, lo, hi)`` to two TIR calls, each bound
guarded against NaN bounds::

    lo' = where(isnan(lo), -inf, lo);  hi' = where(isnan(hi), +inf, hi)
    y = call_tir(minimum, (call_tir(maximum, (x, lo')), hi'))

With constant bounds this is ``clip(x, lo, hi)`` (ONNX: y = min(max(x, lo), hi); a NaN
bound means "unbounded", so it becomes -inf / +inf here too). One ``R.clip`` is what the
activation fusions (FuseHardSwish, FuseHardSigmoid) and PreserveNaN look for.

Preconditions: both bounds are scalar constants (directly or through the importer's
NaN guard); the TIR functions are the importer's ``maximum*`` / ``minimum*``.
Declines: a bound that is computed at run time.

Before::  lv5 = add(x, 3); lv6 = call_tir(maximum, (lv5, lv4)); lv9 = call_tir(minimum, (lv6, lv8))
After::   lv9 = clip(add(x, 3), 0, 6)
"""

from __future__ import annotations

import math
import re

import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_gv, is_op, is_tuple, rewrite_call, wildcard

from lwc.passes._support import Bindings, FunctionRewrite, prim_value


def _bound_pattern():
    guarded = is_op("relax.where")(is_op("relax.isnan")(is_const()), is_const(), is_const())
    return guarded | is_const()


def _bound_value(expr) -> float | None:
    """The number a bound stands for (NaN -> None meaning unbounded), or raise if not constant."""
    if isinstance(expr, relax.Call):  # where(isnan(c), +-inf, c)
        value = prim_value(expr.args[2])
    else:
        value = prim_value(expr)
    if value is None:
        raise ValueError("bound is not a scalar constant")
    return None if math.isnan(value) else value


def _is_func(gvar, stem: str) -> bool:
    return re.fullmatch(rf"{stem}\d*", gvar.name_hint) is not None


@tvm.transform.module_pass(opt_level=0, name="CanonicalizeClip")
class CanonicalizeClip(FunctionRewrite):
    """Rewrite call_tir(minimum, (call_tir(maximum, (x, lo)), hi)) to R.clip(x, lo, hi)."""

    def _rewrite(self, func: relax.Function) -> relax.Function:
        x, lo, hi = wildcard(), _bound_pattern(), _bound_pattern()
        max_gv, min_gv = is_gv(), is_gv()
        # a dynamic-dims module passes the shape's symbols after the tensors: (x, lo, W)
        inner = is_op("relax.call_tir")(max_gv, is_tuple([x, lo]) | is_tuple([x, lo, wildcard()]))
        outer = is_op("relax.call_tir")(min_gv, is_tuple([inner, hi]) | is_tuple([inner, hi, wildcard()]))
        bindings = Bindings(func)

        def replace(expr, m):
            if not (_is_func(m[max_gv], "maximum") and _is_func(m[min_gv], "minimum")):
                return expr
            if not bindings.single_use(m[inner]):
                self.stats.declined.append((bindings.name(expr), "max output has other readers"))
                return expr
            try:
                low, high = _bound_value(m[lo]), _bound_value(m[hi])
            except ValueError as err:
                self.stats.declined.append((bindings.name(expr), str(err)))
                return expr
            self.stats.changed["clips canonicalized"] += 1
            return relax.op.clip(
                m[x], -math.inf if low is None else low, math.inf if high is None else high
            )

        return rewrite_call(outer, replace, func)
