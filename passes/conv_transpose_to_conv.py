"""ConvTransposeToConv: a transposed conv whose stride equals its kernel is a 1x1 conv
followed by a depth-to-space shuffle.

With stride (kh, kw) = kernel (kh, kw), no padding, no output padding, dilation 1 and one
group, every output pixel receives exactly one tap (ONNX ConvTranspose, "Outputs"):

    y[n, o, i*kh + a, j*kw + b] = sum_c x[n, c, i, j] * W[c, o, a, b]      (W: IOHW)
                                = z[n, o*kh*kw + a*kw + b, i, j]
    z = conv2d(x, W')  with  W'[o*kh*kw + a*kw + b, c, 0, 0] = W[c, o, a, b]
    y = reshape(transpose(reshape(z, [N, O, kh, kw, H, W]), [0, 1, 4, 2, 5, 3]), [N, O, H*kh, W*kw])

TVM lowers ``conv2d_transpose`` as a convolution over the zero-dilated input (TOPI
``conv2d_transpose_nchw``): kh*kw taps per output of which all but one multiply a zero,
plus a dilation block full of div/mod. PP-OCRv4 det's two 2x2 stride-2 upsamplers took
20% of its arm64 instructions that way (349 M of 1,734 M, ~20 instructions per useful
multiply-add; benchmarks/arm64_proxy.md); as a 1x1 conv they get lwc's register-tiled
conv rule, and the shuffle is one injective kernel (which the bias and activation after
it join).

Preconditions: NCHW data, IOHW constant weight, strides == kernel, padding and
output_padding 0, dilation 1, groups 1. Declines anything else (the op stays as it is).
"""

from __future__ import annotations

import tvm
from lwc.passes._support import Bindings, FunctionRewrite, const_value
from lwc.passes._support import ints as _ints
from lwc.passes._support import out_dtype as _out_dtype
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard


@tvm.transform.module_pass(opt_level=0, name="ConvTransposeToConv")
class ConvTransposeToConv(FunctionRewrite):
    """Rewrite R.nn.conv2d_transpose with stride == kernel to conv2d 1x1 + depth-to-space."""

    def _rewrite(self, func: relax.Function) -> relax.Function:
        x, w = wildcard(), is_const()
        conv_t = is_op("relax.nn.conv2d_transpose")(x, w)
        bindings = Bindings(func)

        def replace(expr, m):
            attrs = expr.attrs
            weight = const_value(m[w])
            why = None
            if attrs.data_layout != "NCHW" or attrs.kernel_layout != "IOHW" or attrs.out_layout != "NCHW":
                why = f"layout {attrs.data_layout}/{attrs.kernel_layout}"
            elif weight is None or weight.ndim != 4:
                why = "weight is not a constant 4-d tensor"
            elif int(attrs.groups) != 1:
                why = "grouped"
            elif _ints(attrs.strides) != list(weight.shape[2:]):
                why = "stride differs from the kernel"
            elif any(_ints(attrs.padding)) or any(_ints(attrs.output_padding)):
                why = "padded"
            elif _ints(attrs.dilation) != [1, 1]:
                why = "dilated"
            shape = getattr(m[x].ty, "shape", None) if why is None else None
            if why is None and (shape is None or len(shape) != 4
                                or not all(isinstance(d, tvm.tirx.IntImm) for d in shape)):
                why = "input shape is not static"
            if why is not None:
                self.stats.declined.append((bindings.name(expr), why))
                return expr
            n, _, h, wd = (int(d) for d in shape)
            c, o, kh, kw = weight.shape
            w1 = weight.transpose(1, 2, 3, 0).reshape(o * kh * kw, c, 1, 1)
            z = relax.op.nn.conv2d(m[x], relax.const(w1, str(weight.dtype)), out_dtype=_out_dtype(attrs))
            z = relax.op.reshape(z, [n, o, kh, kw, h, wd])
            z = relax.op.permute_dims(z, [0, 1, 4, 2, 5, 3])
            self.stats.changed["conv2d_transpose as conv2d 1x1 + depth-to-space"] += 1
            return relax.op.reshape(z, [n, o, h * kh, wd * kw])

        return rewrite_call(conv_t, replace, func)
