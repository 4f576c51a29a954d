"""LowerQdqConv2d: ``conv2d(dequantize(xq), dequantize(Wq))`` -> integer conv2d.

Math (per output channel o; x per-tensor with scale s_x and zero point z_x, weights
per-channel symmetric with scale s_w[o] and zero point 0, as onnxruntime's
``quantize_static`` and lwc's own quantizer write them):

    conv(s_x (xq - z_x), s_w W) [o] = s_x s_w[o] * (conv(xq, W)[o] - z_x * sum(W[o]))

where conv(xq, W) is int8/uint8 x int8 -> int32 accumulation. Zero padding of the real
input is the value z_x in the quantized domain, so the input is padded with z_x
explicitly (TVM's qnn lowering did the same) and the correction z_x * sum(W[o]) then
holds at the borders too; it covers grouped and depthwise convolutions (sum over W[o],
the weights output channel o sees).

Before::

    xf = dequantize(xq, s_x, z_x); wf = dequantize(Wq, s_w, 0, axis=0)
    y  = conv2d(xf, wf, padding=p, groups=g)

After::

    xp  = pad(xq, p, pad_value=z_x)
    acc = conv2d(xp, Wq, padding=0, groups=g, out_dtype="int32") - z_x * sum(Wq[o])
    y   = astype(acc, "float32") * (s_x * s_w[o])       # the "float epilogue"

The float epilogue is what :mod:`lwc.passes.fuse_requantize` turns into an integer
requantization when a ``quantize`` follows; otherwise it dequantizes for the fp32 ops after.

Preconditions (checked; each decline has a reason in ``declined``): NCHW/OIHW layouts;
x int8/uint8 with constant per-tensor scale/zero point; weights a constant int8 tensor
with constant scales per tensor or along axis 0 and all-zero zero points.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from lwc.passes._qdq import const_value, dtype_of, lower_matches, qparams

NAME = "LowerQdqConv2d"


def _pattern():
    x_dq = is_op("relax.dequantize")(wildcard(), wildcard(), wildcard())
    w_dq = is_op("relax.dequantize")(is_const(), wildcard(), wildcard())
    conv = is_op("relax.nn.conv2d")(x_dq, w_dq)
    return conv, x_dq, w_dq


def check(conv: relax.Call, x_dq: relax.Call, w_dq: relax.Call, var2val: dict) -> str | None:
    """Why this conv2d cannot run on integer kernels, or None when it can."""
    attrs = conv.attrs
    if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
        return f"layout {attrs.data_layout}/{attrs.kernel_layout} (needs NCHW/OIHW)"
    if dtype_of(x_dq.args[0]) not in ("int8", "uint8"):
        return f"input is {dtype_of(x_dq.args[0])}, not int8/uint8"
    xq = qparams(x_dq, var2val)
    if xq is None or not xq.per_tensor:
        return "input scale/zero point not constant per-tensor"
    if dtype_of(w_dq.args[0]) != "int8":
        return f"weights are {dtype_of(w_dq.args[0])}, not int8"
    wq = qparams(w_dq, var2val)
    if wq is None:
        return "weight scale/zero point not constant"
    if not wq.per_tensor and wq.axis % 4 != 0:
        return f"weight scales along axis {wq.axis}, not the output channel"
    if np.any(wq.zero_point != 0):
        return "weight zero point is not 0 (asymmetric weights)"
    if dtype_of(conv) != "float32":
        return f"conv2d output is {dtype_of(conv)}"
    return None


def lower(conv: relax.Call, x_dq: relax.Call, w_dq: relax.Call, var2val: dict) -> relax.Expr:
    """The integer conv2d plus float epilogue (see the module docstring)."""
    attrs = conv.attrs
    xq = qparams(x_dq, var2val)
    wq = qparams(w_dq, var2val)
    weight = const_value(w_dq.args[0], var2val).astype(np.int8)
    out_ch = weight.shape[0]
    z_x = int(xq.zero_point[0])
    data = x_dq.args[0]
    top, left, bottom, right = (int(p) for p in attrs.padding)
    if top or left or bottom or right:
        data = relax.op.nn.pad(data, [0, 0, 0, 0, top, bottom, left, right], pad_value=float(z_x))
    acc = relax.op.nn.conv2d(
        data, relax.const(weight), strides=attrs.strides, padding=[0, 0, 0, 0],
        dilation=attrs.dilation, groups=int(attrs.groups), out_dtype="int32",
    )
    if z_x != 0:
        correction = z_x * weight.astype(np.int64).reshape(out_ch, -1).sum(axis=1)
        acc = relax.op.subtract(acc, relax.const(correction.reshape(1, out_ch, 1, 1).astype(np.int32)))
    w_scale = np.broadcast_to(wq.scale, (out_ch,)) if wq.per_tensor else wq.scale
    scale = (np.float64(xq.scale[0]) * w_scale.astype(np.float64)).astype(np.float32)
    return relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(scale.reshape(1, out_ch, 1, 1)))


@tvm.transform.module_pass(opt_level=0, name=NAME)
class LowerQdqConv2d:
    """Rewrite dequantize -> conv2d into int8 conv2d with int32 accumulation.

    After the pass runs, ``declined`` holds ``(conv2d text, reason)`` for every QDQ
    conv2d left in floating point.
    """

    def __init__(self):
        self.declined: list[tuple[str, str]] = []
        self.lowered = 0

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        return lower_matches(mod, _pattern(), check, lower, "conv2d", self)
