"""LiftQuantParams: scalar constants of an int8 graph become 1-element tensors.

TVM's legalization turns a 0-d constant operand into an immediate of the kernel's TIR
(``_try_convert_to_scalar_const``): ``quantize(x, 0.0332, 11)`` becomes
``round(x / T.float32(0.0332)) + T.float32(11)``, and FuseRequantize's fixed-point
multiplier, shift and zero point become ``T.int64`` literals. MetaSchedule keys tuning
records by the kernel's TIR (structural equality, values included), so an int8 build
calibrated on other samples -- other scales, same graph -- found no record of the log
tuned with the first calibration set (PP-OCR cls: 11 of 62 kernels).

A 1-element constant is a buffer parameter instead (TVM reads ``scale[0]``, its
"singleton qparam"; the values move into the Relax graph's constants), so the kernel
-- and the record that schedules it -- is the same for any calibration. The arithmetic
is unchanged (the same IEEE division and integer ops, on a loaded instead of an
immediate operand); LLVM hoists the load out of the loops (kernels are ``noalias``).

Rewritten: the scale and zero point of ``quantize`` / ``dequantize`` (not the unit scale
of a quantize that ReciprocalQuantize rewrote), and 0-d constant
operands of elementwise binary ops whose other operand has rank >= 1 (so no output
shape changes). Runs last in the int8 stage.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from lwc.passes._qdq import Constant
from lwc.passes._support import FunctionRewrite, PassStats, rewrite_functions
from lwc.passes.reciprocal_quantize import UNIT_SCALE

NAME = "LiftQuantParams"

_QDQ = {"relax.quantize", "relax.dequantize"}
_BINARY = {
    "relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.floor_divide",
    "relax.maximum", "relax.minimum", "relax.right_shift", "relax.left_shift", "relax.power",
}


def _scalar_const(expr) -> bool:
    """A 0-d tensor constant (not a shape or PrimValue constant)."""
    value = getattr(expr, "value", None) if isinstance(expr, Constant) else None
    return hasattr(value, "numpy") and len(value.shape) == 0


def _unit_scale(op: str, index: int, expr) -> bool:
    """The scale 1.0 of a quantize that ReciprocalQuantize rewrote: not a calibration value,
    so it stays an immediate and TVM's legalization drops the division by it."""
    return op == "relax.quantize" and index == 1 and float(expr.value.numpy()) == UNIT_SCALE


def _singleton(expr: Constant) -> Constant:
    dtype = str(expr.ty.dtype)
    return relax.const(expr.value.numpy().astype(dtype).reshape(1), dtype)


def _rank(expr) -> int:
    """The tensor rank of ``expr`` (-1 when unknown or not a tensor)."""
    ndim = getattr(getattr(expr, "ty", None), "ndim", -1)
    return int(ndim) if ndim is not None else -1


@mutator
class _Lift(PyExprMutator):
    def __init__(self, mod, stats):
        super().__init__(mod)
        self.stats = stats

    def visit_call_(self, call):  # noqa: D102 - PyExprMutator hook
        call = super().visit_call_(call)
        op = getattr(call.op, "name", None)
        if op in _QDQ:
            args = list(call.args)
            lifted = [i for i in (1, 2)
                      if _scalar_const(args[i]) and not _unit_scale(op, i, args[i])]
            if not lifted:
                return call
            for i in lifted:
                args[i] = _singleton(args[i])
        elif op in _BINARY and len(call.args) == 2:
            a, b = call.args
            if _scalar_const(b) and _rank(a) >= 1:
                args = [a, _singleton(b)]
            elif _scalar_const(a) and _rank(b) >= 1:
                args = [_singleton(a), b]
            else:
                return call
        else:
            return call
        self.stats.changed["scalar constants lifted"] += 1
        return relax.Call(call.op, args, call.attrs, call.ty_args, call.span)


@tvm.transform.module_pass(opt_level=0, name=NAME)
class LiftQuantParams(FunctionRewrite):
    """Make 0-d constant operands of QDQ and elementwise ops 1-element tensors (see module doc)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        self.stats = PassStats()
        return rewrite_functions(mod, _Lift(mod, self.stats).visit_expr)

    @property
    def lowered(self) -> int:
        """Constants lifted (the int8 stage's summary count for this pass)."""
        return int(self.stats.changed.get("scalar constants lifted", 0))

    @property
    def declined(self) -> list:
        """Nothing is declined: a constant that does not qualify is simply left."""
        return []
