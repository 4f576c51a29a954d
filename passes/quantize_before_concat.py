"""QuantizeBeforeConcat: quantize the inputs of a concat, not its output.

A per-tensor ``quantize`` is elementwise and a concat only moves elements, so the two
commute exactly (the same bytes come out)::

    quantize(concat(a, b), s, z)  ==  concat(quantize(a, s, z), quantize(b, s, z))

Moved before the concat, FuseOps puts each quantize into the kernel that produced its
input, and the concat moves uint8 instead of float32. PP-OCRv4 det's neck concatenates
three nearest upsamplings (x2, x4, x8) and a full-size branch into the 96-channel input of
its head convs, then quantizes: that kernel (resizes, concat, quantize of 2.5 M elements)
executed 36.0 M instructions per inference on the arm64 proxy (rpi5 int8, cortex-a76);
with the quantize moved, the resizes and concat with the quantize fused into each branch
take 8.6 M (the whole model 837.9 M -> 811.6 M). Moving it further, before the nearest
resizes (also exact), made the uint8 resizes cost more than the float ones with the
quantize fused: 11.5 M, so resizes are left alone.

Before::   y = quantize(concat((a, b), axis=1), s, z)
After::    y = concat((quantize(a, s, z), quantize(b, s, z)), axis=1)

Preconditions: the quantize's scale and zero point are constant and per-tensor (a
per-channel quantize along the concat axis would need its scales split). Runs first in
the int8 stage, so FuseRequantize sees a moved quantize right after a float epilogue it
can fuse.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from lwc.passes._qdq import bound_value, qparams, rewrite_matches

NAME = "QuantizeBeforeConcat"


def _pattern():
    return is_op("relax.quantize")(is_op("relax.concat")(wildcard()), wildcard(), wildcard())


def check(m, root, var2val) -> str | None:
    """Why the quantize at ``m[root]`` stays where it is, or None."""
    quant = m[root]
    qp = qparams(quant, var2val)
    if qp is None or not qp.per_tensor:
        return "scale or zero point is not a per-tensor constant"
    concat = bound_value(quant.args[0], var2val)
    if not isinstance(bound_value(concat.args[0], var2val), relax.Tuple):
        return "concat of a tuple variable"
    return None


def move(m, root, var2val) -> relax.Expr:
    """``quantize(concat(x...))`` -> ``concat(quantize(x)...)`` (the pass repeats, so a
    concat of concats is moved through level by level)."""
    quant = m[root]
    concat = bound_value(quant.args[0], var2val)
    _, scale, zp = quant.args
    axis, out_dtype = int(quant.attrs.axis), str(quant.attrs.out_dtype)
    items = bound_value(concat.args[0], var2val).fields
    return relax.op.concat([relax.op.quantize(x, scale, zp, axis=axis, out_dtype=out_dtype) for x in items],
                           axis=concat.attrs.axis)


@tvm.transform.module_pass(opt_level=0, name=NAME)
class QuantizeBeforeConcat:
    """Move per-tensor quantize ops before the concats they follow.

    ``moved`` counts the quantize ops moved (one per level). ``declined`` stays empty: a
    quantize left where it is is still lowered by the passes after this one (the compile
    notes list declines as ops not lowered to int8).
    """

    def __init__(self):
        self.declined: list[tuple[str, str]] = []
        self.moved = 0

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        root = _pattern()
        out = rewrite_matches(
            mod, root,
            lambda m, var2val: check(m, root, var2val),
            lambda m, var2val: move(m, root, var2val),
            "quantize", self, "moved",
        )
        self.declined = []
        return out
