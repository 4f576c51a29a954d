"""ReciprocalQuantize: quantize by multiplying with 1 / scale instead of dividing by scale.

TVM legalizes ``relax.quantize`` as ONNX defines QuantizeLinear (ONNX operators,
QuantizeLinear: ``y = saturate(round(x / y_scale) + y_zero_point)``): one vector division
per 16 lanes. A division is the slowest vector instruction there is (Zen 4 ``vdivps
zmm``: 11 cycles latency, one per 5-6 cycles; the Cortex-A76's ``fdiv v.4s``: 10 cycles,
one per 7), and an int8 conv's float epilogue ends in this quantize: in PP-OCR cls's int8
1x1 conv 32->200 (hard_swish, then quantize) the epilogue with its two divisions (the
other is hard_swish's ``/ 6``) took 68 % of the kernel's time, the int8 dot products 22 %.

The rewrite multiplies by the reciprocal, as XNNPACK's and TFLite's optimized quantize
kernels do, and leaves TVM a quantize with a unit scale::

    quantize(x, s, z)  ->  quantize(x * (1 / s), 1.0, z)

The unit scale stays an immediate (LiftQuantParams leaves it: it does not depend on the
calibration), so TVM's legalization drops the division by 1.0 (exact in IEEE arithmetic)
and the rounding and saturation are TVM's own. ``x * (1/s)`` differs from ``x / s`` by at most
one ulp, so an output can differ by one quantization step, and only where ``x / s`` lies
within an ulp of a rounding tie (``k + 0.5``). The int8 kernels already differ from
onnxruntime by up to a step (the fixed-point requantization of FuseRequantize); the
tests compare with onnxruntime at that tolerance.

Preconditions: scale and zero point are constant and per-tensor, the output dtype is int8
or uint8. Runs in the int8 stage after FuseRequantize (which turns the quantize after an
integer conv into fixed-point arithmetic) and before LiftQuantParams (which makes ``1/s``
and ``z`` kernel parameters, so tuning records stay independent of the calibration).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from lwc.passes._qdq import Constant
from lwc.passes._support import FunctionRewrite, PassStats, rewrite_functions

NAME = "ReciprocalQuantize"

#: The scale of a rewritten quantize (LiftQuantParams keeps it an immediate).
UNIT_SCALE = 1.0


def _scalar(expr) -> np.ndarray | None:
    """The value of a constant with one element (0-d or shape (1,)), else None."""
    if not isinstance(expr, Constant):
        return None
    value = expr.value.numpy()
    return value.reshape(()) if value.size == 1 else None


def reciprocal_quantize(call: relax.Call, emit=lambda e: e) -> relax.Expr | None:
    """The multiply form of a per-tensor ``relax.quantize`` call, or None where it does not apply.

    Args:
        call: ``relax.quantize(x, scale, zero_point)``, x float32 of any shape.
        emit: binds the multiply (a BlockBuilder's ``emit``, keeping the dataflow block in
            A-normal form); the default nests it.
    Returns:
        ``quantize(x * (1/scale), 1.0, zero_point)`` (``1/scale`` a float32 0-d constant),
        or None: scale or zero point not a constant scalar, a scale of 0 or not finite, an
        output dtype other than int8/uint8, an input other than float32.
    """
    scale, zero = _scalar(call.args[1]), _scalar(call.args[2])
    x = call.args[0]
    if str(call.attrs.out_dtype) not in ("int8", "uint8") or scale is None or zero is None:
        return None
    if str(x.ty.dtype) != "float32" or not np.isfinite(scale) or float(scale) == 0.0:
        return None
    inverse = relax.const(np.float32(1.0) / np.float32(scale), "float32")
    scaled = emit(relax.op.multiply(x, inverse))
    return relax.op.quantize(scaled, relax.const(UNIT_SCALE, "float32"), call.args[2],
                             int(call.attrs.axis), str(call.attrs.out_dtype))


@mutator
class _Rewrite(PyExprMutator):
    def __init__(self, mod, stats: PassStats):
        super().__init__(mod)
        self.stats = stats

    def visit_call_(self, call):  # noqa: D102 - PyExprMutator hook
        call = super().visit_call_(call)
        if getattr(call.op, "name", None) != "relax.quantize":
            return call
        out = reciprocal_quantize(call, self.builder_.emit)
        if out is None:
            self.stats.declined.append((str(call.args[0]), "not a per-tensor int8/uint8 quantize "
                                        "with constant scale and zero point"))
            return call
        self.stats.changed["quantize by reciprocal"] += 1
        return out


@tvm.transform.module_pass(opt_level=0, name=NAME)
class ReciprocalQuantize(FunctionRewrite):
    """Per-tensor quantize as a multiply by ``1 / scale`` (see the module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        self.stats = PassStats()
        rewrite = _Rewrite(mod, self.stats)
        return rewrite_functions(
            mod, lambda func: relax.analysis.remove_all_unused(rewrite.visit_expr(func)))

    @property
    def lowered(self) -> int:
        """Quantize ops rewritten (the int8 stage's summary count for this pass)."""
        return int(self.stats.changed.get("quantize by reciprocal", 0))

    @property
    def declined(self) -> list:
        """``(where, reason)`` for each quantize left as a division."""
        return list(self.stats.declined)
