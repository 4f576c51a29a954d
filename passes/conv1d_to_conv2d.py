"""Conv1dToConv2d: run a 1-D convolution as a 2-D one of height 1.

lwc's CPU schedule rules (``lwc.schedules``) and ConvertConvLayout know ``conv2d``;
a ``conv1d`` (audio front ends: Silero VAD's STFT is a stride-128 conv1d with 258
filters) would be lowered by TVM unscheduled (~1.2 GFLOP/s). With H = 1 the two are the
same sum (PyTorch's and ONNX's Conv define conv1d so):

    y[n, o, w] = sum_{c, k} x[n, c, w * s + k * d - p_l] * W[o, c, k]
               = conv2d(x[:, :, None, :], W[:, :, None, :], strides (1, s),
                        padding (0, p_l, 0, p_r), dilation (1, d))[:, :, 0, :]

Preconditions: layouts NCW / OIW (what the ONNX importer emits); a constant weight is
reshaped at compile time, any other gets an ``expand_dims``.
Declines: another layout.

Before::  y = conv1d(x, W, strides=[s], padding=[pl, pr])
After::   y = squeeze(conv2d(expand_dims(x, 2), W4, strides=[1, s], padding=[0, pl, 0, pr]), [2])
"""

from __future__ import annotations

import tvm
from lwc.passes._support import Bindings, FunctionRewrite, const_value
from lwc.passes._support import out_dtype as conv_out_dtype
from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard


def _weight_4d(weight: relax.Expr) -> relax.Expr:
    value = const_value(weight)
    if value is not None:
        return relax.const(value.reshape(value.shape[0], value.shape[1], 1, value.shape[2]),
                           str(value.dtype))
    return relax.op.expand_dims(weight, 2)


@tvm.transform.module_pass(opt_level=0, name="Conv1dToConv2d")
class Conv1dToConv2d(FunctionRewrite):
    """Rewrite R.nn.conv1d (NCW/OIW) to R.nn.conv2d of height 1 between expand/squeeze."""

    def _rewrite(self, func: relax.Function) -> relax.Function:
        x, w = wildcard(), wildcard()
        conv = is_op("relax.nn.conv1d")(x, w)
        bindings = Bindings(func)

        def replace(expr, m):
            attrs = expr.attrs
            if attrs.data_layout != "NCW" or attrs.kernel_layout != "OIW" or attrs.out_layout != "NCW":
                self.stats.declined.append(
                    (bindings.name(expr), f"layout {attrs.data_layout}/{attrs.kernel_layout}"))
                return expr
            pad_l, pad_r = (int(p) for p in attrs.padding)
            conv2d = relax.op.nn.conv2d(
                relax.op.expand_dims(m[x], 2), _weight_4d(m[w]),
                strides=[1, int(attrs.strides[0])], padding=[0, pad_l, 0, pad_r],
                dilation=[1, int(attrs.dilation[0])], groups=int(attrs.groups),
                out_dtype=conv_out_dtype(attrs),
            )
            self.stats.changed["conv1d as conv2d"] += 1
            return relax.op.squeeze(conv2d, [2])

        return rewrite_call(conv, replace, func)
