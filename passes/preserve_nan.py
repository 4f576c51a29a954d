"""PreserveNaN: make Relu, Clip, Max and Min return NaN for NaN inputs, as onnxruntime does.

TVM lowers ``relu(x)`` to ``max(x, 0)`` and ``clip`` to ``min(max(x, lo), hi)``; its
LLVM code picks the non-NaN operand, so a NaN activation silently becomes 0 (or the
clip bound). onnxruntime and the ONNX reference propagate NaN (``y = NaN`` when
``x = NaN``). A model that produces NaN must not hide it after compilation, so each of
these ops ``f`` becomes::

    where(isnan(x), x, f(x))                          # relu, clip (relu6 is a clip)
    where(isnan(a), a, where(isnan(b), b, f(a, b)))   # maximum, minimum

The select is elementwise; FuseOps puts it in the same kernel as ``f``, which costs one
compare per element. A second operand that is a non-NaN constant needs no guard.
Runs last among lwc's passes so fusions see the plain ops.

Before::  lv1 = relu(lv)
After::   lv1 = where(isnan(lv), lv, relu(lv))
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard

from lwc.passes._support import FunctionRewrite, const_value, prim_value

_UNARY = ("relax.nn.relu", "relax.clip")  # R.nn.relu6 is built from clip
_BINARY = ("relax.maximum", "relax.minimum")


def _never_nan(expr) -> bool:
    value = const_value(expr)
    if value is None:
        scalar = prim_value(expr)
        return scalar is not None and not np.isnan(scalar)
    return not (value.dtype.kind == "f" and np.isnan(value).any())


def _guard(operand, result):
    return relax.op.where(relax.op.isnan(operand), operand, result)


@tvm.transform.module_pass(opt_level=0, name="PreserveNaN")
class PreserveNaN(FunctionRewrite):
    """Guard relu/clip/maximum/minimum so NaN inputs give NaN outputs."""

    def _rewrite(self, func: relax.Function) -> relax.Function:
        root = None
        for op in _UNARY:
            pat = is_op(op)(wildcard(), varg_default_wildcard=True)
            root = pat if root is None else root | pat
        for op in _BINARY:
            root = root | is_op(op)(wildcard(), wildcard())
        guarded = set()  # rewrite_call reruns until nothing changes: guard each call once

        def replace(expr, _m):
            if expr in guarded:
                return expr
            guarded.add(expr)
            if not str(expr.args[0].ty.dtype).startswith(("float", "bfloat")):
                return expr
            result = expr
            if expr.op.name in _BINARY:
                a, b = expr.args
                if _never_nan(a):
                    a, b = b, a
                if not _never_nan(b):
                    result = _guard(b, result)
                result = _guard(a, result)
            else:
                result = _guard(expr.args[0], result)
            self.stats.changed[f"{expr.op.name.split('.')[-1]} guarded"] += 1
            return result

        return rewrite_call(root, replace, func)
