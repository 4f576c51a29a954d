"""RemoveNoOps: drop ops that do not change their input.

Rules (each is an identity on values, so exact):

- ``reshape(x, s)`` with ``s == shape(x)`` -> ``x``; ``reshape(reshape(x, s1), s2)`` -> ``reshape(x, s2)``
- ``permute_dims(x, p)`` with p the identity -> ``x``; two permutes compose into one
  (or vanish when they cancel)
- ``astype(x, t)`` with ``t == dtype(x)`` -> ``x``
- ``add(x, 0)``, ``subtract(x, 0)``, ``multiply(x, 1)``, ``divide(x, 1)`` with a constant that
  does not broadcast ``x`` to a bigger shape -> ``x``

ONNX Identity and inference-mode Dropout never reach Relax: onnxsim removes them and
TVM's importer maps them to the input. Declines: none (a non-matching op is not a no-op).

Before::  lv1 = reshape(x, [1, 8]); lv2 = reshape(lv1, [8]); lv3 = permute_dims(lv2, [0])
After::   lv3 = reshape(x, [8])
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from lwc.passes._support import FunctionRewrite, const_value, tensor_dtype, tensor_shape


def _perm(call, ndim: int) -> list[int]:
    axes = call.attrs.axes
    return list(range(ndim))[::-1] if axes is None else [int(a) % ndim for a in axes]


@tvm.transform.module_pass(opt_level=0, name="RemoveNoOps")
class RemoveNoOps(FunctionRewrite):
    """Remove identity reshapes/transposes/casts and x+0, x*1; merge reshape and permute chains."""

    def _rewrite(self, func: relax.Function) -> relax.Function:
        x, k = wildcard(), is_const()
        reshape = is_op("relax.reshape")(x, wildcard())
        permute = is_op("relax.permute_dims")(x)
        identity_k = (
            is_op("relax.add")(x, k) | is_op("relax.add")(k, x) | is_op("relax.subtract")(x, k)
            | is_op("relax.multiply")(x, k) | is_op("relax.multiply")(k, x)
            | is_op("relax.divide")(x, k)
        )
        root = reshape | permute | is_op("relax.astype")(x) | identity_k

        def replace(expr, m):
            if not isinstance(expr, relax.Call):  # matched through a binding: nothing to simplify
                return expr
            new = self._simplify(expr, m[x], m.get(k) if k in m else None)
            return expr if new is None else new

        return rewrite_call(root, replace, func)

    def _simplify(self, expr, x, k):
        op = expr.op.name
        shape_in, shape_out = tensor_shape(x), tensor_shape(expr)
        if op == "relax.reshape":
            if shape_in is not None and shape_in == shape_out:
                return self._count("identity reshape removed", x)
            if isinstance(x, relax.Call) and getattr(x.op, "name", "") == "relax.reshape":
                return self._count("reshape chain merged", relax.op.reshape(x.args[0], expr.args[1]))
            return None
        if op == "relax.permute_dims":
            if shape_in is None:
                return None
            perm = _perm(expr, len(shape_in))
            if perm == list(range(len(perm))):
                return self._count("identity transpose removed", x)
            if isinstance(x, relax.Call) and getattr(x.op, "name", "") == "relax.permute_dims":
                inner = _perm(x, len(perm))
                combined = [inner[p] for p in perm]
                if combined == list(range(len(combined))):
                    return self._count("transpose pair cancelled", x.args[0])
                return self._count("transpose chain merged", relax.op.permute_dims(x.args[0], combined))
            return None
        if op == "relax.astype":
            return self._count("identity cast removed", x) if str(expr.attrs.dtype) == tensor_dtype(x) else None
        value = const_value(k)
        if value is None or shape_in is None or shape_in != shape_out:
            return None
        neutral = 0 if op in ("relax.add", "relax.subtract") else 1
        if np.all(value == neutral):
            return self._count(f"x{ {'relax.add': '+0', 'relax.subtract': '-0', 'relax.multiply': '*1', 'relax.divide': '/1'}[op]} removed", x)
        return None

    def _count(self, what: str, result):
        self.stats.changed[what] += 1
        return result
