"""SubsampleStridedConv1x1: a 1x1 conv with stride s reads every s-th pixel; take those
pixels first (one strided slice), then run a stride-1 1x1 conv on the compact input.

    conv2d(x, W, stride=(sh, sw), padding 0)[n, o, i, j] = sum_c W[o, c] x[n, c, i*sh, j*sw]
                                                     = conv2d(x[:, :, ::sh, ::sw], W)[n, o, i, j]

ResNet v1's downsampling 1x1 convs (stride 2) otherwise gather their input at stride 2 in
the reduction loop: every output-channel tile re-reads the whole input, one float per
8-float vector and cache line (light_resnet50's 1024 -> 2048 projection ran at a quarter of
the other convs' GFLOP/s on the host). The slice is one small copy (an s*s-th of the input)
after which the conv rule's stride-1 kernel reads contiguous rows.

Preconditions: conv2d, NCHW data and OIHW weight of spatial size 1x1, a stride above 1,
no padding, dilation 1, a static input shape, operands that are not ``dequantize`` calls
(an int8 QDQ conv stays one pattern for the int8 stage). Declines anything else.
"""

from __future__ import annotations

import tvm
from lwc.passes._support import Bindings, FunctionRewrite, out_dtype
from lwc.passes._support import ints as _ints
from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard


@tvm.transform.module_pass(opt_level=0, name="SubsampleStridedConv1x1")
class SubsampleStridedConv1x1(FunctionRewrite):
    """Rewrite a strided 1x1 R.nn.conv2d to strided_slice + stride-1 conv2d."""

    def _rewrite(self, func: relax.Function) -> relax.Function:
        x, w = wildcard(), wildcard()
        conv = is_op("relax.nn.conv2d")(x, w)
        bindings = Bindings(func)
        value_of = {b.var: b.value for block in func.body.blocks for b in block.bindings}

        def dequantized(expr) -> bool:
            value = value_of.get(expr, expr)
            return isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.dequantize"

        def replace(expr, m):
            attrs = expr.attrs
            strides = _ints(attrs.strides)
            if strides == [1, 1]:
                return expr
            wshape = getattr(m[w].ty, "shape", None)
            xshape = getattr(m[x].ty, "shape", None)
            why = None
            if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW" or attrs.out_layout != "NCHW":
                why = f"layout {attrs.data_layout}/{attrs.kernel_layout}"
            elif (wshape is None or len(wshape) != 4
                  or [getattr(wshape[i], "value", None) for i in (2, 3)] != [1, 1]):
                why = "not a 1x1 kernel"
            elif any(_ints(attrs.padding)):
                why = "padded"
            elif _ints(attrs.dilation) != [1, 1]:
                why = "dilated"
            elif xshape is None or len(xshape) != 4 or not all(isinstance(d, tvm.tirx.IntImm) for d in xshape):
                why = "input shape is not static"
            elif dequantized(m[x]) or dequantized(m[w]):
                why = "a QDQ conv (the int8 stage lowers it as one pattern)"
            if why is not None:
                self.stats.declined.append((bindings.name(expr), why))
                return expr
            h, wd = int(xshape[2]), int(xshape[3])
            sub = relax.op.strided_slice(m[x], axes=[2, 3], begin=[0, 0], end=[h, wd], strides=strides)
            self.stats.changed["strided 1x1 conv2d on a subsampled input"] += 1
            return relax.op.nn.conv2d(
                sub, m[w], strides=[1, 1], padding=[0, 0, 0, 0], dilation=[1, 1],
                groups=int(attrs.groups), data_layout="NCHW", kernel_layout="OIHW",
                out_layout="NCHW", out_dtype=out_dtype(attrs),
            )

        return rewrite_call(conv, replace, func)
