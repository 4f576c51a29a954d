"""CanonicalizeMinMax: turn the importer's stack-and-reduce ONNX Max/Min/Sum into binary ops.

TVM's ONNX importer converts variadic ``Max(a, b, ...)`` (likewise Min, Sum) with static
shapes as::

    max(stack([broadcast_to(a, s), broadcast_to(b, s), ...], axis=0), axis=0)

three kernels and a stacked copy of every input. ONNX defines these ops as elementwise
with multidirectional broadcasting, so the same values come from the pairwise form
``maximum(maximum(a, b), ...)`` (``minimum`` / ``add``), which broadcasts to the same ``s``
and is one elementwise op that FuseOps fuses into its producer. PreserveNaN then guards
``maximum`` / ``minimum`` so a NaN operand gives NaN, as onnxruntime does (a reduce-max
drops NaN).

Preconditions: the reduction is over axis 0 of a ``stack`` along axis 0, without keepdims.
Nothing to decline otherwise.

Before::  lv1 = broadcast_to(a, s); lv2 = broadcast_to(b, s); lv3 = stack((lv1, lv2), 0); lv4 = max(lv3, [0])
After::   lv4 = maximum(a, b)
"""

from __future__ import annotations

import functools

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard

from lwc.passes._support import FunctionRewrite, tensor_shape

_BINARY = {"relax.max": relax.op.maximum, "relax.min": relax.op.minimum, "relax.sum": relax.op.add}


def _unbroadcast(expr):
    if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.broadcast_to":
        return expr.args[0]
    return expr


@tvm.transform.module_pass(opt_level=0, name="CanonicalizeMinMax")
class CanonicalizeMinMax(FunctionRewrite):
    """Rewrite max/min/sum(stack(...), axis=0) into pairwise maximum/minimum/add."""

    def _rewrite(self, func: relax.Function) -> relax.Function:
        stack = is_op("relax.concat")(wildcard()) | is_op("relax.stack")(wildcard())
        root = is_op("relax.max")(stack) | is_op("relax.min")(stack) | is_op("relax.sum")(stack)

        def replace(expr, m):
            packed = m[stack]
            axes = expr.attrs.axis
            if packed.op.name != "relax.stack" or int(packed.attrs.axis) != 0:
                return expr
            if axes is None or [int(a) for a in axes] != [0] or bool(expr.attrs.keepdims):
                return expr
            fields = packed.args[0]
            if not isinstance(fields, relax.Tuple):
                return expr
            operands = [_unbroadcast(f) for f in fields.fields]
            result = functools.reduce(_BINARY[expr.op.name], operands)
            if tensor_shape(expr) is None:
                return expr
            if len(operands) == 1 or _broadcast_shape(operands) != tensor_shape(expr):
                result = relax.op.broadcast_to(result, tensor_shape(expr))
            self.stats.changed[f"{expr.op.name.split('.')[-1]} of {len(operands)} made pairwise"] += 1
            return result

        return rewrite_call(root, replace, func)


def _broadcast_shape(operands) -> tuple | None:
    shapes = [tensor_shape(o) for o in operands]
    if any(s is None for s in shapes):
        return None
    ndim = max(len(s) for s in shapes)
    padded = [(1,) * (ndim - len(s)) + s for s in shapes]
    return tuple(max(dims) for dims in zip(*padded))
