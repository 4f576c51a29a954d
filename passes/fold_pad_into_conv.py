"""FoldPadIntoConv: fold a zero ``Pad`` on the spatial axes into the following conv's padding.

Math: conv2d(pad(x, p), W, padding=q) == conv2d(x, W, padding=q + p) when the pad is
constant-zero and touches only H and W (NCHW); a conv's own padding is zero padding.

Pad width layout (Relax ``nn.pad``): ``[before_0, after_0, before_1, after_1, ...]``;
conv2d padding: ``[top, left, bottom, right]``.
Declines, with reasons: pad mode is not constant, pad value is not 0, the pad touches
batch/channel axes, the conv is not NCHW, the padded tensor has other readers.

Before::  lv1 = pad(x, [0,0, 0,0, 1,1, 2,2]); lv2 = conv2d(lv1, W, padding=[0,0,0,0])
After::   lv2 = conv2d(x, W, padding=[1,2,1,2])
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard

from lwc.passes._support import Bindings, FunctionRewrite


@tvm.transform.module_pass(opt_level=0, name="FoldPadIntoConv")
class FoldPadIntoConv(FunctionRewrite):
    """Fold constant-zero spatial pads into conv2d padding."""

    def _rewrite(self, func: relax.Function) -> relax.Function:
        x, w = wildcard(), wildcard()
        pad = is_op("relax.nn.pad")(x, varg_default_wildcard=True)
        root = is_op("relax.nn.conv2d")(pad, w)
        bindings = Bindings(func)

        def replace(expr, m):
            reason = self._check(m[pad], expr, bindings)
            if reason:
                self.stats.declined.append((bindings.name(expr), reason))
                return expr
            widths = [int(v) for v in m[pad].attrs.pad_width]
            top, bottom, left, right = widths[4:8]
            old = [int(v) for v in expr.attrs.padding]
            padding = [old[0] + top, old[1] + left, old[2] + bottom, old[3] + right]
            a = expr.attrs
            self.stats.changed["pad folded"] += 1
            return relax.op.nn.conv2d(
                m[x], m[w], strides=a.strides, padding=padding, dilation=a.dilation,
                groups=a.groups, data_layout=a.data_layout, kernel_layout=a.kernel_layout,
                out_layout=a.out_layout, out_dtype=a.out_dtype,
            )

        return rewrite_call(root, replace, func)

    @staticmethod
    def _check(pad, conv, bindings) -> str | None:
        attrs = pad.attrs
        if str(attrs.pad_mode) != "constant":
            return f"pad mode is {attrs.pad_mode}"
        value = getattr(attrs, "pad_value", 0.0)
        if len(pad.args) > 1:
            from lwc.passes._support import prim_value

            value = prim_value(pad.args[1])
        if value is None or float(value) != 0.0:
            return "pad value is not 0"
        widths = [int(v) for v in attrs.pad_width]
        if len(widths) != 8 or any(widths[:4]):
            return "pad touches batch or channel axes"
        if str(conv.attrs.data_layout) != "NCHW":
            return f"conv layout is {conv.attrs.data_layout}"
        if not bindings.single_use(pad):
            return "padded tensor has other readers"
        return None
