"""FuseSilu: recognise x * sigmoid(x) and replace it with ``R.nn.silu``.

Math (Elfwing et al. 2018; a.k.a. Swish-1)::  silu(x) = x * sigmoid(x)

Exporters without a SiLU op (ONNX < 22, Paddle's swish) write ``Sigmoid -> Mul``.
One Relax op instead of two; TVM legalizes ``silu`` to a single elementwise kernel.
Preconditions: both factors read the same value. Nothing to decline otherwise.

Before::  lv1 = sigmoid(x); lv2 = multiply(x, lv1)
After::   lv2 = silu(x)
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard

from lwc.passes._patterns import mul
from lwc.passes._support import FunctionRewrite


@tvm.transform.module_pass(opt_level=0, name="FuseSilu")
class FuseSilu(FunctionRewrite):
    """Replace x * sigmoid(x) by silu(x)."""

    def _rewrite(self, func: relax.Function) -> relax.Function:
        x, x2 = wildcard(), wildcard()
        root = mul(x, is_op("relax.sigmoid")(x2))

        def replace(expr, m):
            if not m[x].same_as(m[x2]):
                return expr  # gating by another tensor's sigmoid (squeeze-excite): not SiLU
            self.stats.changed["silu fused"] += 1
            return relax.op.nn.silu(m[x])

        return rewrite_call(root, replace, func)
