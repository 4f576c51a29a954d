"""FuseGelu: recognise GELU written out elementwise, in its erf and tanh forms.

Math (Hendrycks & Gimpel 2016)::

    gelu(x)      = 0.5 * x * (1 + erf(x / sqrt(2)))
    gelu_tanh(x) = 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))

Exporters write these as Div/Mul -> Erf -> Add -> Mul -> Mul (and Pow or Mul*Mul for
x^3). Any association and operand order of the products and sums is matched; the
result is ``R.nn.gelu`` or ``R.nn.gelu_tanh``.
Declines: constants that are not 0.5, 1, 1/sqrt(2) (or sqrt(2)), sqrt(2/pi), 0.044715
(relative tolerance 1e-4, as exporters round them), or an inner x that differs.

Before::  lv1 = divide(x, 1.4142); lv2 = erf(lv1); lv3 = add(lv2, 1); lv4 = multiply(x, lv3); lv5 = multiply(lv4, 0.5)
After::   lv5 = gelu(x)
"""

from __future__ import annotations

import math

import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from lwc.passes._patterns import add, mul, product3
from lwc.passes._support import Bindings, PassStats, rewrite_functions, scalar_is


def _close(expr, want: float) -> bool:
    return scalar_is(expr, want, rtol=1e-4)


@tvm.transform.module_pass(opt_level=0, name="FuseGelu")
class FuseGelu:
    """Replace elementwise GELU chains (erf or tanh form) by gelu / gelu_tanh."""

    def __init__(self):
        self.stats = PassStats()

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        self.stats = PassStats()
        mod = rewrite_functions(mod, self._rewrite_erf)
        return rewrite_functions(mod, self._rewrite_tanh)

    def _decline(self, bindings, expr, reason):
        self.stats.declined.append((bindings.name(expr), reason))
        return expr

    def _rewrite_erf(self, func: relax.Function) -> relax.Function:
        x, xi, half, one, k = wildcard(), wildcard(), is_const(), is_const(), is_const()
        scaled = is_op("relax.divide")(xi, k) | mul(xi, k)
        root = product3(x, half, add(is_op("relax.erf")(scaled), one))
        bindings = Bindings(func)

        def replace(expr, m):
            if not m[x].same_as(m[xi]):
                return expr
            divides = isinstance(m[scaled], relax.Call) and m[scaled].op.name == "relax.divide"
            want_k = math.sqrt(2.0) if divides else 1 / math.sqrt(2.0)
            if not (_close(m[half], 0.5) and _close(m[one], 1.0)):
                return self._decline(bindings, expr, "constants are not 0.5 and 1")
            if not _close(m[k], want_k):
                return self._decline(bindings, expr, "erf argument is not x / sqrt(2)")
            self.stats.changed["gelu (erf) fused"] += 1
            return relax.op.nn.gelu(m[x])

        return rewrite_call(root, replace, func)

    def _rewrite_tanh(self, func: relax.Function) -> relax.Function:
        x, x1, x2, half, one, c, k = (wildcard(), wildcard(), wildcard(), is_const(),
                                      is_const(), is_const(), is_const())
        cube = is_op("relax.power")(x2, is_const()) | mul(x2, mul(x2, x2)) | mul(mul(x2, x2), x2)
        inner = add(x1, mul(c, cube))
        root = product3(x, half, add(is_op("relax.tanh")(mul(k, inner)), one))
        bindings = Bindings(func)

        def replace(expr, m):
            if not (m[x].same_as(m[x1]) and m[x].same_as(m[x2])):
                return expr
            if not (_close(m[half], 0.5) and _close(m[one], 1.0)):
                return self._decline(bindings, expr, "constants are not 0.5 and 1")
            if not (_close(m[c], 0.044715) and _close(m[k], math.sqrt(2 / math.pi))):
                return self._decline(bindings, expr, "tanh constants are not 0.044715, sqrt(2/pi)")
            power = m[cube]
            if power.op.name == "relax.power" and not _close(power.args[1], 3.0):
                return self._decline(bindings, expr, "power is not 3")
            self.stats.changed["gelu (tanh) fused"] += 1
            return relax.op.nn.gelu_tanh(m[x])

        return rewrite_call(root, replace, func)
