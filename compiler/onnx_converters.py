"""lwc's converters for ONNX ops that TVM 0.27's importer converts *wrongly*.

Where :mod:`lwc.onnx_ops` adds ops TVM lacks, this module replaces TVM's converter for
ops it has but gets wrong for some inputs (field cases N1-N5 and the older frontend
cases in shared/cases/README.md). Each converter follows the ONNX operator spec
(onnx/docs/Operators.md, the section named in its docstring) and delegates to TVM's
own converter where TVM is right, so common models import to the same Relax as before
(and keep their tuning records).

| op | TVM 0.27 gets wrong | here |
|---|---|---|
| AveragePool, MaxPool | ``auto_pad=SAME_*`` ignores dilations (and MaxPool's SAME_LOWER uses floor(in/stride)) | SAME pads per spec, then TVM's |
| Softplus, Mish | ``log(1 + exp(-abs(x)))`` rounds to 0 for x < -17 in fp32 (Softplus(-20) = 2.06e-9); Mish(-20) = 0 | a cancellation-free log1p; Mish in closed form; fp16 in fp32 |
| Tanh | fp16 computed in fp16 (tanh(0.001) 2% low) | fp16/bf16 in fp32 |
| Elu, Selu | fp16 input fails (float32 constants); ``exp(x) - 1`` cancels near 0 | an accurate expm1; fp16 in fp32 |
| LayerNormalization | ignores ``stash_type`` (fp16 squares overflow: NaN); Scale/B must have the normalized shape; Mean/InvStdDev outputs are 0 | fp32 statistics, Scale/B broadcast, real Mean/InvStdDev |
| Resize | opset 10 input order; empty ``scales`` beside ``sizes``; a non-integer in*scale (coordinates use out/in instead of the given scale); ``axes`` | spec coordinates, gathers + weights |
| ConvTranspose | ignores ``output_shape`` | pads from output_shape as onnxruntime does |

The table :data:`CONVERTERS` is merged by :func:`lwc.onnx_ops.convert_map`.
"""

from __future__ import annotations

import math

import numpy as np
from lwc.onnx_ops_common import OnnxOpConverter, attr_str, dtype_of, shape_of
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend as _tvm

_op = relax.op
_LOW_PRECISION = ("float16", "bfloat16")


def _const(value, dtype: str) -> relax.Expr:
    # the dtype argument matters: relax.const turns a float64 array into float32 without it
    return relax.const(np.asarray(value, dtype=dtype), dtype)


def _constant_array(x) -> np.ndarray | None:
    """The numpy value of a Relax constant input (None for a computed one)."""
    for field in ("value", "data"):  # GenericConst.value (TVM 0.27), Constant.data (older)
        data = getattr(x, field, None)
        if data is not None and hasattr(data, "numpy"):
            return data.numpy()
    return None


def _shape_values(x) -> list[int] | None:
    """The values of a constant int tensor or a ShapeExpr (Shape -> ... -> sizes chains)."""
    if isinstance(x, relax.ShapeExpr):
        try:
            return [int(v) for v in x.values]
        except TypeError:
            return None
    value = _constant_array(x)
    return None if value is None else [int(v) for v in value.reshape(-1)]


# --------------------------------------------------------------------------- pooling


def same_pads(shape: list[int], kernel, strides, dilations, mode: str) -> list[int]:
    """Explicit pads ``[b0, b1, .., e0, e1, ..]`` for ``auto_pad=SAME_UPPER/SAME_LOWER``.

    ONNX AveragePool / MaxPool (opset 19), attribute auto_pad: output = ceil(in / stride);
    total = max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - in), the odd pad at
    the end (SAME_UPPER) or at the beginning (SAME_LOWER).
    """
    begins, ends = [], []
    for size, k, s, d in zip(shape, kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else large)
        ends.append(large if mode == "SAME_UPPER" else small)
    return begins + ends


class _SamePadPool(OnnxOpConverter):
    """TVM's pool converter, given explicit pads where ``auto_pad`` is SAME_*."""

    tvm_converter = None

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        mode = attr_str(attr, "auto_pad", "NOTSET")
        if mode in ("SAME_UPPER", "SAME_LOWER"):
            spatial = shape_of(inputs[0], "pool")[2:]
            kernel = list(attr["kernel_shape"])
            strides = list(attr.get("strides", [1] * len(kernel)))
            dilations = list(attr.get("dilations", [1] * len(kernel)))
            attr = {**attr, "auto_pad": b"NOTSET",
                    "pads": same_pads(spatial, kernel, strides, dilations, mode)}
        return cls.tvm_converter._impl_v1(bb, inputs, attr, params)


class AveragePool(_SamePadPool):
    """AveragePool (ONNX opset 1-22): TVM's, with SAME pads counting dilations."""

    tvm_converter = _tvm.AveragePool


class MaxPool(_SamePadPool):
    """MaxPool (ONNX opset 1-22): TVM's, with SAME pads counting dilations (output ceil(in/s))."""

    tvm_converter = _tvm.MaxPool


# --------------------------------------------------------------------------- activations


def log1p(t: relax.Expr, dt: str) -> relax.Expr:
    """log(1 + t) for 0 <= t <= 1 of type ``dt``, accurate for every t: the series
    log(1 + t) = 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + ...), s = t / (2 + t) <= 1/3, which
    has no cancellation (Abramowitz & Stegun 4.1.27). Terms to the type's precision:
    (1/9)^K / (2K + 1) < eps. (The ``log(u) * t / (u - 1)``, u = 1 + t trick does not
    survive compilation: (1 + t) - 1 is simplified to t.)"""
    terms = 16 if dt == "float64" else 7
    s = _op.divide(t, _op.add(_const(2, dt), t))
    s2 = _op.multiply(s, s)
    series = _const(1 / (2 * terms + 1), dt)
    for k in range(terms - 1, -1, -1):
        series = _op.add(_op.multiply(series, s2), _const(1 / (2 * k + 1), dt))
    return _op.multiply(_op.multiply(_const(2, dt), s), series)


def expm1(x: relax.Expr, dt: str) -> relax.Expr:
    """exp(x) - 1 for x of type ``dt``, accurate near 0 (Kahan): u = exp(x); x where
    u == 1, -1 where u - 1 == -1, else (u - 1) * x / log(u)."""
    one = _const(1, dt)
    u = _op.exp(x)
    um1 = _op.subtract(u, one)
    exact = _op.divide(_op.multiply(um1, x), _op.log(u))
    return _op.where(_op.equal(u, one), x, _op.where(_op.equal(um1, _const(-1, dt)), um1, exact))


def softplus(x: relax.Expr, dt: str) -> relax.Expr:
    """ln(1 + e^x) = max(x, 0) + log1p(e^-|x|): never inf, no cut-off threshold."""
    return _op.add(_op.maximum(x, _const(0, dt)), log1p(_op.exp(_op.negative(_op.abs(x))), dt))


def _in_fp32(bb, x: relax.Expr, fn) -> relax.Expr:
    """``fn(x, dtype)``, computed in float32 for fp16/bf16 input and cast back."""
    dt = dtype_of(x)
    if dt not in _LOW_PRECISION:
        return fn(x, dt)
    return _op.astype(fn(bb.emit(_op.astype(x, "float32")), "float32"), dt)


class Softplus(OnnxOpConverter):
    """Softplus (ONNX opset 1, 22): y = ln(exp(x) + 1), accurate for every x."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        return _in_fp32(bb, inputs[0], softplus)


class Mish(OnnxOpConverter):
    """Mish (ONNX opset 18, 22): y = x * tanh(softplus(x)), accurate for every x.

    With t = exp(-|x|), tanh(ln(1 + e^x)) is (1 + 2t) / (1 + 2t + 2t^2) for x > 0 and
    n / (n + 2), n = t (t + 2), for x <= 0: no overflow, and no tanh of a tiny value
    (TVM's tanh is 0 below ~1e-8, which made Mish(-20) = 0 instead of -4.1e-8).
    """

    @classmethod
    def _impl_v18(cls, bb, inputs, attr, params):
        return _in_fp32(bb, inputs[0], cls.mish)

    @staticmethod
    def mish(x: relax.Expr, dt: str) -> relax.Expr:
        one, two = _const(1, dt), _const(2, dt)
        t = _op.exp(_op.negative(_op.abs(x)))
        p = _op.add(one, _op.multiply(two, t))
        positive = _op.divide(p, _op.add(p, _op.multiply(two, _op.multiply(t, t))))
        n = _op.multiply(t, _op.add(t, two))
        negative = _op.divide(n, _op.add(n, two))
        return _op.multiply(x, _op.where(_op.greater(x, _const(0, dt)), positive, negative))


class Tanh(OnnxOpConverter):
    """Tanh (ONNX opset 6, 13): fp16/bf16 computed in float32 (TVM's fp16 tanh is
    1 - e^-2x over 1 + e^-2x in fp16: tanh(0.001) comes out 2% low). fp32 and fp64 keep
    ``relax.tanh`` itself, which FuseGelu matches."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        if dtype_of(inputs[0]) in _LOW_PRECISION:
            return _in_fp32(bb, inputs[0], lambda x, dt: _op.tanh(x))
        return _op.tanh(inputs[0])


def _elu(x: relax.Expr, dt: str, alpha: float) -> relax.Expr:
    neg = _op.multiply(_const(alpha, dt), expm1(_op.minimum(x, _const(0, dt)), dt))
    return _op.where(_op.greater(x, _const(0, dt)), x, neg)


class Elu(OnnxOpConverter):
    """Elu (ONNX opset 6, 22): y = x for x > 0, alpha * (exp(x) - 1) otherwise."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        alpha = float(attr.get("alpha", 1.0))
        return _in_fp32(bb, inputs[0], lambda x, dt: _elu(x, dt, alpha))


class Selu(OnnxOpConverter):
    """Selu (ONNX opset 6, 22): y = gamma * (x for x > 0, alpha * (exp(x) - 1) otherwise)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        alpha = float(attr.get("alpha", 1.67326319217681884765625))
        gamma = float(attr.get("gamma", 1.05070102214813232421875))
        return _in_fp32(
            bb, inputs[0], lambda x, dt: _op.multiply(_const(gamma, dt), _elu(x, dt, alpha)))


# --------------------------------------------------------------------------- LayerNormalization


class LayerNormalization(OnnxOpConverter):
    """LayerNormalization (ONNX opset 17).

    Over the axes [axis, rank): mean = E[x]; d = x - mean; var = E[d^2] (two passes, never
    E[x^2] - E[x]^2); y = d / sqrt(var + eps) * Scale + B, Scale and B broadcast
    (unidirectionally, numpy-style) to the normalized shape. Statistics are computed in
    ``stash_type`` (1 = float32, the default) for fp16/bf16 input, so squares do not
    overflow. Outputs 2 and 3 (Mean, InvStdDev) have the input's shape with the
    normalized axes set to 1, in the stash type.

    The input is first shifted by its first element in each normalized block (y does not
    change: LayerNorm is shift-invariant), so a large common offset (x = 80000 + noise)
    costs no precision in the mean: the "shifted data" algorithm for the variance
    (Chan, Golub, LeVeque 1983).
    """

    @classmethod
    def _impl_v17(cls, bb, inputs, attr, params):
        x, scale, bias = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
        shape = shape_of(x, "LayerNormalization")
        rank, dt = len(shape), dtype_of(x)
        axis = int(attr.get("axis", -1)) % rank
        axes = list(range(axis, rank))
        eps = float(attr.get("epsilon", 1e-5))
        stash = "float32" if int(attr.get("stash_type", 1)) == 1 and dt in _LOW_PRECISION else dt
        norm_shape = shape[axis:]
        xs = bb.emit(_op.astype(x, stash)) if stash != dt else x
        first = bb.emit(_op.strided_slice(xs, axes=axes, begin=[0] * len(axes),
                                          end=[1] * len(axes)))
        shifted = bb.emit(_op.subtract(xs, first))
        scale = cls._broadcast(bb, scale, norm_shape, stash)
        bias = cls._broadcast(bb, bias, norm_shape, stash) if bias is not None else _const(
            np.zeros(norm_shape), stash)
        out = bb.emit(_op.nn.layer_norm(shifted, scale, bias, axes, eps))
        if stash != dt:
            out = bb.emit(_op.astype(out, dt))
        if attr["tvm_custom"]["num_outputs"] == 1:
            return out
        mean = bb.emit(_op.mean(shifted, axis=axes, keepdims=True))
        diff = bb.emit(_op.subtract(shifted, mean))
        var = bb.emit(_op.mean(_op.multiply(diff, diff), axis=axes, keepdims=True))
        inv_std = bb.emit(_op.rsqrt(_op.add(var, _const(eps, stash))))
        return relax.Tuple([out, bb.emit(_op.add(mean, first)), inv_std])

    @staticmethod
    def _broadcast(bb, value, norm_shape: list[int], dtype: str):
        if dtype_of(value) != dtype:
            value = bb.normalize(_op.astype(value, dtype))
        if shape_of(value, "LayerNormalization") != norm_shape:
            value = _op.broadcast_to(value, norm_shape)
        return bb.normalize(value)


# --------------------------------------------------------------------------- ConvTranspose


class ConvTranspose(OnnxOpConverter):
    """ConvTranspose (ONNX opset 1-22), with ``output_shape`` honoured.

    Spec (ConvTranspose, attribute output_shape): total_padding = stride * (in - 1) +
    output_padding + (kernel - 1) * dilation + 1 - output_shape, split as for SAME_UPPER
    (small half first) or otherwise (large half first). As onnxruntime does, a negative
    total is taken as 0 and the output rows past the full transposed convolution are
    zero (plus the bias). Without output_shape, TVM's converter.
    """

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        if "output_shape" not in attr:
            return _tvm.ConvTranspose._impl_v1(bb, inputs, attr, params)
        x, w = inputs[0], inputs[1]
        bias = inputs[2] if len(inputs) > 2 else None
        in_shape = shape_of(x, "ConvTranspose")[2:]
        nd = len(in_shape)
        want = list(attr["output_shape"])[-nd:]
        kernel = list(attr.get("kernel_shape", shape_of(w, "ConvTranspose")[2:]))
        strides = list(attr.get("strides", [1] * nd))
        dilations = list(attr.get("dilations", [1] * nd))
        adjust = list(attr.get("output_padding", [0] * nd))
        upper = attr_str(attr, "auto_pad", "NOTSET") == "SAME_UPPER"
        heads = []
        for i in range(nd):
            total = max(0, strides[i] * (in_shape[i] - 1) + adjust[i]
                        + (kernel[i] - 1) * dilations[i] + 1 - want[i])
            heads.append(total // 2 if upper else total - total // 2)
        full = [strides[i] * (in_shape[i] - 1) + (kernel[i] - 1) * dilations[i] + 1
                for i in range(nd)]
        tails = [max(0, f - h - o) for f, h, o in zip(full, heads, want)]
        extra = [o - (f - h - t) for o, f, h, t in zip(want, full, heads, tails)]
        plain = {k: v for k, v in attr.items() if k not in ("output_shape", "auto_pad")}
        if all(e < s for e, s in zip(extra, strides)):  # rows past the full output: zeros
            plain.update(pads=heads + tails, output_padding=extra)
            return _tvm.ConvTranspose._impl_v1(bb, inputs, plain, params)
        plain.update(pads=heads + tails, output_padding=[0] * nd)
        y = bb.emit(_tvm.ConvTranspose._impl_v1(bb, [x, w, None], plain, params))
        y = bb.emit(_op.nn.pad(y, [0, 0, 0, 0] + [v for e in extra for v in (0, e)]))
        if bias is not None:
            y = _op.add(y, _op.reshape(bias, [1, -1] + [1] * nd))
        return y


# --------------------------------------------------------------------------- Resize


class Resize(OnnxOpConverter):
    """Resize (ONNX opset 10-19) for nearest / linear / cubic.

    Inputs by opset: 10 ``(X, scales)``; 11+ ``(X, roi, scales, sizes)``, where an empty
    tensor means "not given" (exporters write empty scales beside sizes). Output size
    floor(in * scale) when scales are given; the coordinate transform then uses the
    given scale, not out/in (spec: Resize, coordinate_transformation_mode). Where
    out == in * scale exactly and no opset-18 extras are used, TVM's resize (same
    result) is kept; otherwise each resized axis becomes gathers with per-output weights
    computed here (:func:`resize_taps`), summed: separable, as the spec's n-linear /
    n-cubic interpolation is.
    """

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        # Resize-10 has no coordinate attributes: asymmetric coordinates, and nearest
        # takes floor when upsampling, ceil when downsampling (onnxruntime's "simple").
        attr = {**attr, "coordinate_transformation_mode": b"asymmetric", "opset10": 1}
        return cls._resize(bb, inputs[0], None, inputs[1], None, attr, params)

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        def given(i):
            if len(inputs) <= i or inputs[i] is None:
                return None
            value = _constant_array(inputs[i])
            return None if value is not None and value.size == 0 else inputs[i]

        return cls._resize(bb, inputs[0], given(1), given(2), given(3), attr, params)

    @classmethod
    def _resize(cls, bb, x, roi, scales, sizes, attr, params):
        shape = shape_of(x, "Resize")
        rank = len(shape)
        axes = [int(a) % rank for a in attr.get("axes", range(rank))]
        roi_values = None
        if roi is not None:
            roi_values = _constant_array(roi)
            if roi_values is None:
                raise ValueError("Resize: roi must be a constant")
            roi_values = roi_values.astype(np.float64).reshape(-1)
        if scales is not None:
            scale_values = _constant_array(scales)
            if scale_values is None:
                raise ValueError("Resize: scales must be a constant")
            scale_values = [float(s) for s in scale_values.reshape(-1)]
            out = list(shape)
            for a, s in zip(axes, scale_values):
                out[a] = math.floor(shape[a] * s)
            full_scales = [1.0] * rank
            for a, s in zip(axes, scale_values):
                full_scales[a] = s
        else:
            size_values = _shape_values(sizes) if sizes is not None else None
            if size_values is None:
                raise ValueError("Resize: sizes must be constant (or computed from shapes)")
            out, full_scales = cls._from_sizes(shape, axes, size_values, attr)
        if cls._tvm_is_right(shape, out, full_scales, axes, roi_values, attr):
            tvm_attr = {k: v for k, v in attr.items() if k not in ("axes",)}
            sizes_const = _const(np.array(out, np.int64), "int64")
            roi_in = _const(np.zeros(2 * rank, np.float32), "float32")
            return _tvm.Resize._impl_v18(bb, [x, roi_in, None, sizes_const], tvm_attr, params)
        y = x
        for a in range(rank):
            if out[a] == shape[a] and full_scales[a] == 1.0 and not cls._crops(roi_values, a, rank, axes):
                continue
            y = cls._resize_axis(bb, y, a, shape[a], out[a], full_scales[a],
                                 cls._axis_roi(roi_values, a, rank, axes), attr)
        return y

    @staticmethod
    def _from_sizes(shape, axes, size_values, attr):
        policy = attr_str(attr, "keep_aspect_ratio_policy", "stretch")
        scales = [size_values[i] / shape[a] for i, a in enumerate(axes)]
        if policy != "stretch":
            pick = min if policy == "not_larger" else max
            common = pick(scales)
            scales = [common] * len(axes)
            size_values = [math.floor(shape[a] * common + 0.5) for a in axes]
        out, full = list(shape), [1.0] * len(shape)
        for i, a in enumerate(axes):
            out[a], full[a] = int(size_values[i]), float(scales[i])
        return out, full

    @staticmethod
    def _crops(roi_values, a, rank, axes) -> bool:
        return Resize._axis_roi(roi_values, a, rank, axes) != (0.0, 1.0)

    @staticmethod
    def _axis_roi(roi_values, a, rank, axes) -> tuple[float, float]:
        if roi_values is None or roi_values.size == 0 or a not in axes:
            return (0.0, 1.0)
        i, n = axes.index(a), len(axes)
        return float(roi_values[i]), float(roi_values[n + i])

    @staticmethod
    def _tvm_is_right(shape, out, scales, axes, roi_values, attr) -> bool:
        mode = attr_str(attr, "mode", "nearest")
        coord = attr_str(attr, "coordinate_transformation_mode", "half_pixel")
        rank = len(shape)
        return (
            rank in (4, 5)
            and mode in ("nearest", "linear")
            and coord in ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel")
            and "axes" not in attr
            and "opset10" not in attr
            and not int(attr.get("antialias", 0))
            and attr_str(attr, "keep_aspect_ratio_policy", "stretch") == "stretch"
            and out[:2] == shape[:2]
            and all(o == s * f for o, s, f in zip(out[2:], shape[2:], scales[2:]))
        )

    @staticmethod
    def _resize_axis(bb, x, axis, size, out, scale, roi, attr):
        index, weight, inside = resize_taps(size, out, scale, roi, attr)
        dt = dtype_of(x)
        rank = len(shape_of(x, "Resize"))
        bshape = [1] * rank
        bshape[axis] = out
        y = None
        for k in range(index.shape[0]):
            picked = _op.take(x, _const(index[k], "int64"), axis=axis, mode="clip")
            if not np.all(weight[k] == 1.0):
                picked = _op.multiply(picked, _const(weight[k].reshape(bshape), dt))
            y = picked if y is None else _op.add(y, picked)
        if not inside.all():
            fill = float(attr.get("extrapolation_value", 0.0))
            mask = inside.reshape(bshape)
            y = _op.where(_const(mask, "bool"), y, _const(fill, dt))
        return bb.emit(y)


def resize_taps(size: int, out: int, scale: float, roi: tuple[float, float], attr: dict):
    """Gather indices and weights of a 1-D Resize (ONNX Resize-19 spec, float32 math as
    onnxruntime does).

    Returns:
        ``(index [taps, out] int64, weight [taps, out] float64, inside [out] bool)``:
        output i = sum_k x[index[k, i]] * weight[k, i]; ``inside`` is False where
        tf_crop_and_resize samples outside the input (extrapolation_value there).
    Raises:
        ValueError: antialias with linear/cubic downscaling, or an unknown mode.
    """
    mode = attr_str(attr, "mode", "nearest")
    coord = attr_str(attr, "coordinate_transformation_mode", "half_pixel")
    if int(attr.get("antialias", 0)) and mode != "nearest" and scale < 1:
        raise ValueError("Resize: antialias is not supported")
    f32 = np.float32
    i = np.arange(out, dtype=f32)
    s = f32(scale)
    if coord == "half_pixel":
        xo = (i + f32(0.5)) / s - f32(0.5)
    elif coord == "half_pixel_symmetric":
        adjust = f32(out) / (f32(size) * s)
        center = f32(size) / f32(2)
        xo = center * (f32(1) - adjust) + (i + f32(0.5)) / s - f32(0.5)
    elif coord == "pytorch_half_pixel":
        xo = (i + f32(0.5)) / s - f32(0.5) if out > 1 else np.zeros(out, f32)
    elif coord == "align_corners":
        xo = i * f32(size - 1) / f32(out - 1) if out > 1 else np.zeros(out, f32)
    elif coord == "asymmetric":
        xo = i / s
    elif coord == "tf_crop_and_resize":
        start, end = f32(roi[0]), f32(roi[1])
        if out > 1:
            xo = start * f32(size - 1) + i * (end - start) * f32(size - 1) / f32(out - 1)
        else:
            xo = np.full(out, f32(0.5) * (start + end) * f32(size - 1), f32)
    else:
        raise ValueError(f"Resize: coordinate_transformation_mode {coord!r} is not supported")
    inside = np.ones(out, bool)
    if coord == "tf_crop_and_resize":
        inside = (xo >= 0) & (xo <= f32(size - 1))
    xo = xo.astype(np.float64)
    if mode == "nearest":
        rounding = attr_str(attr, "nearest_mode", "round_prefer_floor")
        if attr.get("opset10"):
            rounding = "floor" if scale >= 1 else "ceil"
        idx = _nearest(xo, rounding)
        return np.clip(idx, 0, size - 1)[None].astype(np.int64), np.ones((1, out)), inside
    base = np.floor(xo)
    t = xo - base
    if mode == "linear":
        offsets, weights = [0, 1], [1 - t, t]
    elif mode == "cubic":
        a = float(attr.get("cubic_coeff_a", -0.75))
        offsets = [-1, 0, 1, 2]
        weights = [_cubic(1 + t, a), _cubic(t, a), _cubic(1 - t, a), _cubic(2 - t, a)]
    else:
        raise ValueError(f"Resize: mode {mode!r} is not supported")
    index = np.stack([base + o for o in offsets]).astype(np.int64)
    weight = np.stack(weights)
    if int(attr.get("exclude_outside", 0)):
        weight = np.where((index >= 0) & (index < size), weight, 0.0)
        weight = weight / weight.sum(axis=0, keepdims=True)
    return np.clip(index, 0, size - 1), weight, inside


def _nearest(xo: np.ndarray, mode: str) -> np.ndarray:
    frac = xo - np.floor(xo)
    if mode == "round_prefer_floor":
        return np.where(frac == 0.5, np.floor(xo), np.round(xo)).astype(np.int64)
    if mode == "round_prefer_ceil":
        return np.where(frac == 0.5, np.ceil(xo), np.round(xo)).astype(np.int64)
    if mode == "floor":
        return np.floor(xo).astype(np.int64)
    if mode == "ceil":
        return np.ceil(xo).astype(np.int64)
    raise ValueError(f"Resize: nearest_mode {mode!r} is not supported")


def _cubic(d: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with coefficient a, at distance d >= 0."""
    d = np.abs(d)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


CONVERTERS = {
    "AveragePool": AveragePool,
    "MaxPool": MaxPool,
    "Softplus": Softplus,
    "Mish": Mish,
    "Tanh": Tanh,
    "Elu": Elu,
    "Selu": Selu,
    "LayerNormalization": LayerNormalization,
    "ConvTranspose": ConvTranspose,
    "Resize": Resize,
}
