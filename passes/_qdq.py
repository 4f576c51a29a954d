"""Helpers shared by the QDQ lowering passes (not a pass itself).

* :func:`const_value` evaluates an expression built only from constants (``Constant``,
  and ``reshape``/``permute_dims``/``astype``/``dequantize``/``expand_dims`` of constants,
  seen through dataflow bindings) to a numpy array, or returns None. ONNX imports give
  biases as ``reshape(const)`` and onnxruntime's QDQ models give them as
  ``dequantize(int32 const)``; both become plain arrays here.
* :func:`qparams` reads a ``relax.dequantize``/``relax.quantize`` call's scale, zero
  point and axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

#: relax.Constant moved to tvm.ir.expr in TVM 0.27.
Constant = getattr(relax, "Constant", None) or tvm.ir.expr.Constant


def _numpy(const: Constant) -> np.ndarray:
    return const.value.numpy()


def bound_value(expr, var2val: dict):
    """The expression a Relax variable is bound to, following variable-to-variable bindings
    (``expr`` itself when it is not a bound variable)."""
    while isinstance(expr, relax.Var) and expr in var2val:
        expr = var2val[expr]
    return expr


def const_value(expr, var2val: dict) -> np.ndarray | None:
    """numpy value of a constant-only expression, else None."""
    expr = bound_value(expr, var2val)
    if isinstance(expr, Constant):
        return _numpy(expr)
    if not isinstance(expr, relax.Call):
        return None
    name = getattr(expr.op, "name", "")
    if name == "relax.reshape":
        x = const_value(expr.args[0], var2val)
        shape = expr.args[1]
        if x is None or not hasattr(shape, "values"):
            return None
        return x.reshape([int(d) for d in shape.values])
    if name == "relax.permute_dims":
        x = const_value(expr.args[0], var2val)
        axes = expr.attrs.axes
        return None if x is None else np.transpose(x, None if axes is None else [int(a) for a in axes])
    if name == "relax.astype":
        x = const_value(expr.args[0], var2val)
        return None if x is None else x.astype(str(expr.attrs.dtype))
    if name == "relax.expand_dims":
        x = const_value(expr.args[0], var2val)
        return None if x is None else np.expand_dims(x, tuple(int(a) for a in expr.attrs.axis))
    if name == "relax.dequantize":
        q = qparams(expr, var2val)
        x = const_value(expr.args[0], var2val)
        if q is None or x is None:
            return None
        return q.dequantize(x)
    return None


@dataclass(frozen=True)
class QParams:
    """Scale and zero point of a (de)quantize call; ``axis`` is None when per-tensor."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None

    @property
    def per_tensor(self) -> bool:
        return self.axis is None

    def along(self, ndim: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """(scale, zero point) shaped to broadcast along ``axis`` of an ``ndim`` tensor."""
        shape = [1] * ndim
        if not self.per_tensor:
            shape[axis] = -1
        return self.scale.reshape(shape), self.zero_point.reshape(shape)

    def dequantize(self, x: np.ndarray) -> np.ndarray:
        axis = 0 if self.axis is None else self.axis % x.ndim
        s, z = self.along(x.ndim, axis)
        return ((x.astype(np.int64) - z.astype(np.int64)) * s).astype(np.float32)


def qparams(call: relax.Call, var2val: dict) -> QParams | None:
    """Scale/zero point of ``relax.quantize``/``relax.dequantize`` if both are constant."""
    scale = const_value(call.args[1], var2val)
    zp = const_value(call.args[2], var2val)
    if scale is None or zp is None:
        return None
    scale = scale.astype(np.float32).ravel()
    zp = zp.ravel()
    if scale.size == 1 and zp.size == 1:
        return QParams(scale, zp, None)
    if zp.size == 1:
        zp = np.full(scale.shape, zp[0], dtype=zp.dtype)
    return QParams(scale, zp, int(call.attrs.axis))


def op_name(expr, var2val: dict) -> str:
    expr = bound_value(expr, var2val)
    return getattr(getattr(expr, "op", None), "name", "") if isinstance(expr, relax.Call) else ""


def dtype_of(expr) -> str:
    return str(expr.ty.dtype)


def count_ops(mod, name: str) -> int:
    """Number of calls to operator ``name`` in all Relax functions of ``mod``."""
    count = 0

    def visit(e):
        nonlocal count
        if isinstance(e, relax.Call) and getattr(e.op, "name", "") == name:
            count += 1

    for _, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return count


def rewrite_matches(mod: tvm.IRModule, root, check, replace, label: str, pass_obj,
                    counter: str) -> tvm.IRModule:
    """Rewrite every match of the dpl pattern ``root`` in each Relax function.

    ``check(match, var2val)`` returns a reason to decline (or None); declined matches are
    appended to ``pass_obj.declined`` as ``(f"{label} {shape}", reason)``; accepted ones
    are replaced by ``replace(match, var2val)`` and counted in ``pass_obj.<counter>``.
    """
    from tvm.relax.dpl import rewrite_call

    out = tvm.IRModule(mod.functions)
    for gvar, func in mod.functions.items():
        if not isinstance(func, relax.Function):
            continue
        var2val = relax.analysis.get_var2val(func)

        def rewriter(expr, m, var2val=var2val):
            reason = check(m, var2val)
            if reason:
                pass_obj.declined.append((f"{label} {tuple(expr.ty.shape)}", reason))
                return expr
            setattr(pass_obj, counter, getattr(pass_obj, counter) + 1)
            return replace(m, var2val)

        out[gvar] = rewrite_call(root, rewriter, func)
    return out


def lower_matches(mod: tvm.IRModule, pattern, check, lower, label: str, pass_obj) -> tvm.IRModule:
    """:func:`rewrite_matches` for ``pattern = (op, x, w)`` with ``check(op, x, w, var2val)``
    and ``lower(op, x, w, var2val)``; accepted matches count in ``pass_obj.lowered``."""
    op_p, x_p, w_p = pattern
    return rewrite_matches(
        mod, op_p,
        lambda m, var2val: check(m[op_p], m[x_p], m[w_p], var2val),
        lambda m, var2val: lower(m[op_p], m[x_p], m[w_p], var2val),
        label, pass_obj, "lowered",
    )
