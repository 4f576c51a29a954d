"""ONNX integer and quantized-linear ops as Relax ops: ConvInteger, QLinearConv, QLinearMatMul.

TVM 0.27's importer has no converters for these. The math is the ONNX spec's (and its
reference implementation's, onnx/reference/ops/op_qlinear_conv.py, op_qlinear_matmul.py):

* ConvInteger:  Y = conv(int32(x) - x_zp, int32(w) - w_zp)                        (int32)
* QLinearConv:  acc = conv(int32(x) - x_zp, int32(w) - w_zp[m]) + B               (int32)
                y = saturate(round_half_even(acc * x_scale * w_scale[m] / y_scale) + y_zp)
* QLinearMatMul: acc = (int32(a) - a_zp) @ (int32(b) - b_zp), then requantized as above,
                 a's scale / zero point per row (M) or scalar, b's per column (N) or scalar.

Padding is applied after the zero point is subtracted, so a padded position counts as
the zero point, as the spec's "pads with the zero point" says. Requantization runs in
float32 (scales multiplied in their own dtype first, as the reference does), rounds half
to even (``relax.op.round`` lowers to ``nearbyint``), adds the output zero point and
saturates to the output type's range.
"""

from __future__ import annotations

import numpy as np
from lwc.onnx_ops_common import OnnxOpConverter, attr_str, const, dtype_of, emit, shape_of
from tvm import relax

_op = relax.op
_CONV = {1: _op.nn.conv1d, 2: _op.nn.conv2d, 3: _op.nn.conv3d}


def _centered(bb, x, zero_point, per_axis: int | None = None):
    """int32(x) - int32(zero_point); a 1-D zero point of length > 1 broadcasts on ``per_axis``."""
    x32 = emit(bb, _op.astype(x, "int32"))
    if zero_point is None:
        return x32
    zp = emit(bb, _op.astype(zero_point, "int32"))
    zp_shape = shape_of(zero_point, "zero point")
    if per_axis is not None and len(zp_shape) == 1 and zp_shape[0] > 1:
        rank = len(shape_of(x, "input"))
        target = [1] * rank
        target[per_axis] = zp_shape[0]
        zp = _op.reshape(zp, target)
    return emit(bb, _op.subtract(x32, zp))


def _conv_padding(attr: dict, in_spatial: list[int], kernel: list[int], strides, dilations):
    auto_pad = attr_str(attr, "auto_pad", "NOTSET")
    nd = len(kernel)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(in_spatial, kernel, strides, dilations):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            small = total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
        return begin + end
    if auto_pad == "VALID":
        return [0] * (2 * nd)
    return list(attr.get("pads", [0] * (2 * nd)))


def _int_conv(bb, x32, w32, attr):
    """int32 convolution with the node's strides, pads, dilations and groups."""
    x_shape, w_shape = shape_of(x32, "Conv"), shape_of(w32, "Conv")
    nd = len(w_shape) - 2
    kernel = list(attr.get("kernel_shape", w_shape[2:]))
    strides = list(attr.get("strides", [1] * nd))
    dilations = list(attr.get("dilations", [1] * nd))
    pads = _conv_padding(attr, x_shape[2:], kernel, strides, dilations)
    conv = _CONV[nd](x32, w32, strides=strides, padding=pads, dilation=dilations,
                     groups=int(attr.get("group", 1)), out_dtype="int32")
    return emit(bb, conv)


def _requantize(bb, acc, scale, y_zero_point, channel_axis: int | None = None):
    """saturate(round_half_even(float32(acc) * scale) + y_zp) in y_zp's dtype (uint8 default)."""
    out_dtype = dtype_of(y_zero_point) if y_zero_point is not None else "uint8"
    scale = emit(bb, _op.astype(scale, "float32"))
    scale_shape = shape_of(scale, "scale")
    if channel_axis is not None and len(scale_shape) == 1 and scale_shape[0] > 1:
        target = [1] * len(shape_of(acc, "acc"))
        target[channel_axis] = scale_shape[0]
        scale = emit(bb, _op.reshape(scale, target))
    y = _op.round(_op.multiply(_op.astype(acc, "float32"), scale))
    if y_zero_point is not None:
        y = _op.add(y, _op.astype(y_zero_point, "float32"))
    info = np.iinfo(out_dtype)
    y = _op.clip(emit(bb, y), float(info.min), float(info.max))
    return emit(bb, _op.astype(emit(bb, y), out_dtype))


def _scale_product(bb, a_scale, b_scale, y_scale):
    """a_scale * b_scale / y_scale, computed in the scales' own dtype (as the reference)."""
    return emit(bb, _op.divide(_op.multiply(a_scale, b_scale), y_scale))


class ConvInteger(OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x, w, x_zp, w_zp = inputs[0], inputs[1], inputs[2], inputs[3]
        x32 = _centered(bb, x, x_zp)
        w32 = _centered(bb, w, w_zp, per_axis=0)
        return _int_conv(bb, x32, w32, attr)


class QLinearConv(OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp = (inputs[i] for i in range(8))
        bias = inputs[8]
        acc = _int_conv(bb, _centered(bb, x, x_zp), _centered(bb, w, w_zp, per_axis=0), attr)
        if bias is not None:
            rank = len(shape_of(acc, "QLinearConv"))
            b32 = emit(bb, _op.astype(bias, "int32"))
            b = _op.reshape(b32, [1, shape_of(b32, "QLinearConv")[0]] + [1] * (rank - 2))
            acc = emit(bb, _op.add(acc, b))
        scale = _scale_product(bb, x_scale, w_scale, y_scale)
        if y_zp is None:
            y_zp = const(0, dtype_of(x))
        return _requantize(bb, acc, scale, y_zp, channel_axis=1)


class QLinearMatMul(OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp = (inputs[i] for i in range(8))
        a_rank = len(shape_of(a, "QLinearMatMul"))
        b_rank = len(shape_of(b, "QLinearMatMul"))
        a32 = _centered(bb, a, a_zp, per_axis=a_rank - 2)
        b32 = _centered(bb, b, b_zp, per_axis=b_rank - 1)
        acc = emit(bb, _op.matmul(a32, b32, out_dtype="int32"))
        out_rank = len(shape_of(acc, "QLinearMatMul"))
        a_s = _per_axis(bb, a_scale, out_rank, out_rank - 2)
        b_s = _per_axis(bb, b_scale, out_rank, out_rank - 1)
        scale = _scale_product(bb, a_s, b_s, y_scale)
        if y_zp is None:
            y_zp = const(0, dtype_of(a))
        return _requantize(bb, acc, scale, y_zp)


def _per_axis(bb, value, rank: int, axis: int):
    """A 1-D per-row / per-column parameter reshaped to broadcast on ``axis`` of a rank-``rank`` result."""
    shape = shape_of(value, "scale")
    if len(shape) == 1 and shape[0] > 1:
        target = [1] * rank
        target[axis] = shape[0]
        return emit(bb, _op.reshape(value, target))
    return value


CONVERTERS = {
    "ConvInteger": ConvInteger,
    "QLinearConv": QLinearConv,
    "QLinearMatMul": QLinearMatMul,
}
