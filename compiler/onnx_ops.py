"""lwc's ONNX op converters over TVM's Relax ONNX importer, merged in one place.

TVM 0.27's importer lacks some ONNX ops. lwc adds converters in TVM's own form
(``OnnxOpConverter`` subclasses, :mod:`lwc.onnx_ops_common`):

* :mod:`lwc.onnx_ops_rnn`: RNN, GRU, LSTM (unrolled over the static sequence length);
* :mod:`lwc.onnx_ops_quant`: QLinearConv, QLinearMatMul, ConvInteger;
* :mod:`lwc.onnx_ops_attention`: Attention (opset 23+);
* this module: the others (losses, CumProd, Swish, Celu, LpNormalization, ...).

:func:`convert_map` is their union (the one merge point), :func:`from_onnx` is TVM's
importer with it in place, and :func:`supported_op_types` is what the frontend's op check
accepts. Each converter's math is the ONNX operator spec's (onnx/docs/Operators.md).
"""

from __future__ import annotations

import contextlib
import functools
import io

import numpy as np
from lwc import onnx_converters, onnx_ops_attention, onnx_ops_quant, onnx_ops_rnn, tvm_compat
from lwc.onnx_ops_common import (
    OnnxOpConverter,
    attr_str,
    const,
    constant_value,
    dtype_of,
    emit,
    shape_of,
    tvm_converter,
)
from tvm import relax

_op = relax.op


class NegativeLogLikelihoodLoss(OnnxOpConverter):
    """loss[n, d..] = -input[n, target[n, d..], d..] * weight[target[n, d..]], 0 where ignored.

    The pick along the class axis is a one-hot mask (``target == arange(C)``), so an
    ignored target outside [0, C) needs no special index handling. Reductions: none,
    sum, mean = sum(loss) / sum(weight of the picked, non-ignored classes).
    """

    @classmethod
    def _impl_v12(cls, bb, inputs, attr, params):
        return cls.loss(bb, inputs[0], inputs[1], inputs[2], attr)

    @staticmethod
    def loss(bb, scores, target, weight, attr):
        dt = dtype_of(scores)
        shape = shape_of(scores, "NegativeLogLikelihoodLoss")
        classes = shape[1]
        arange = const(np.arange(classes).reshape([1, classes] + [1] * (len(shape) - 2)), "int64")
        tgt = emit(bb, _op.expand_dims(_op.astype(target, "int64"), axis=1))
        onehot = emit(bb, _op.astype(_op.equal(tgt, arange), dt))  # [N, C, d..]
        picked = emit(bb, _op.sum(_op.multiply(scores, onehot), axis=[1]))  # [N, d..]
        if weight is not None:
            w = _op.reshape(weight, [1, classes] + [1] * (len(shape) - 2))
            wt = emit(bb, _op.sum(_op.multiply(w, onehot), axis=[1]))
        else:
            wt = None
        ignore = attr.get("ignore_index")
        if ignore is not None:
            keep = emit(bb, _op.astype(_op.not_equal(_op.astype(target, "int64"),
                                                     const(int(ignore), "int64")), dt))
            wt = keep if wt is None else emit(bb, _op.multiply(wt, keep))
        loss = _op.negative(picked)
        if wt is not None:
            loss = _op.multiply(loss, wt)
        loss = emit(bb, loss)
        reduction = attr_str(attr, "reduction", "mean")
        if reduction == "none":
            return loss
        total = emit(bb, _op.sum(loss))
        if reduction == "sum":
            return total
        count = _op.sum(wt) if wt is not None else const(float(np.prod(shape) / classes), dt)
        return emit(bb, _op.divide(total, count))


class SoftmaxCrossEntropyLoss(OnnxOpConverter):
    """log_prob = LogSoftmax(scores, axis=1); loss = NegativeLogLikelihoodLoss(log_prob, ...)."""

    @classmethod
    def _impl_v12(cls, bb, inputs, attr, params):
        log_prob = emit(bb, _op.nn.log_softmax(inputs[0], axis=1))
        loss = NegativeLogLikelihoodLoss.loss(bb, log_prob, inputs[1], inputs[2], attr)
        if attr["tvm_custom"]["num_outputs"] > 1:
            return relax.Tuple([loss, log_prob])
        return loss


def _axis_input(x, op: str) -> int:
    value = constant_value(x)
    if value is None:
        raise ValueError(f"{op}: the axis input must be a constant")
    return int(value.reshape(-1)[0])


class CumProd(OnnxOpConverter):
    """Cumulative product along a constant axis; ``exclusive`` shifts in a 1, ``reverse`` flips."""

    @classmethod
    def _impl_v26(cls, bb, inputs, attr, params):
        x = inputs[0]
        axis = _axis_input(inputs[1], "CumProd")
        reverse = int(attr.get("reverse", 0))
        if reverse:
            x = emit(bb, _op.flip(x, axis=axis))
        y = emit(bb, _op.cumprod(x, axis=axis, exclusive=bool(attr.get("exclusive", 0))))
        if reverse:
            y = emit(bb, _op.flip(y, axis=axis))
        return y

    _impl_v1 = _impl_v26


class Swish(OnnxOpConverter):
    """Swish(x) = x * Sigmoid(alpha * x)."""

    @classmethod
    def _impl_v24(cls, bb, inputs, attr, params):
        x = inputs[0]
        alpha = float(attr.get("alpha", 1.0))
        scaled = x if alpha == 1.0 else _op.multiply(const(alpha, dtype_of(x)), x)
        return emit(bb, _op.multiply(x, _op.sigmoid(scaled)))

    _impl_v1 = _impl_v24


class Celu(OnnxOpConverter):
    """Celu(x) = max(0, x) + min(0, alpha * (exp(x / alpha) - 1))."""

    @classmethod
    def _impl_v12(cls, bb, inputs, attr, params):
        x = inputs[0]
        dt = dtype_of(x)
        alpha = const(float(attr.get("alpha", 1.0)), dt)
        neg = _op.multiply(alpha, _op.subtract(_op.exp(_op.divide(x, alpha)), const(1, dt)))
        return emit(bb, _op.add(_op.maximum(x, const(0, dt)), _op.minimum(neg, const(0, dt))))


class LpNormalization(OnnxOpConverter):
    """x / ||x||_p along ``axis`` (p = 1 or 2)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x = inputs[0]
        axis = int(attr.get("axis", -1))
        p = int(attr.get("p", 2))
        if p == 1:
            norm = _op.sum(_op.abs(x), axis=[axis], keepdims=True)
        elif p == 2:
            norm = _op.sqrt(_op.sum(_op.multiply(x, x), axis=[axis], keepdims=True))
        else:
            raise ValueError(f"LpNormalization: p must be 1 or 2, got {p}")
        return emit(bb, _op.divide(x, norm))


class SwiGLU(OnnxOpConverter):
    """Y = Swish(a, alpha) * b = a * Sigmoid(alpha * a) * b."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        a, b = inputs[0], inputs[1]
        alpha = float(attr.get("alpha", 1.0))
        scaled = a if alpha == 1.0 else _op.multiply(const(alpha, dtype_of(a)), a)
        return emit(bb, _op.multiply(_op.multiply(a, _op.sigmoid(scaled)), b))


class _Window(OnnxOpConverter):
    """A window of constant ``size``, computed here (periodic: N = size, else size - 1):
    Hann 0.5 - 0.5 cos(2 pi n / N), Hamming 25/46 - 21/46 cos(2 pi n / N),
    Blackman 0.42 - 0.5 cos(2 pi n / N) + 0.08 cos(4 pi n / N)."""

    @classmethod
    def _impl_v17(cls, bb, inputs, attr, params):
        size = constant_value(inputs[0])
        if size is None:
            raise ValueError(f"{cls.__name__}: the size input must be a constant")
        size = int(size.reshape(-1)[0])
        periodic = int(attr.get("periodic", 1))
        n = np.arange(size, dtype=np.float64)
        denom = size if periodic else size - 1
        phase = 2 * np.pi * n / max(denom, 1)
        window = cls.formula(phase)
        from onnx import helper as onnx_helper

        dtype = onnx_helper.tensor_dtype_to_np_dtype(int(attr.get("output_datatype", 1)))
        return const(window.astype(dtype), np.dtype(dtype).name)


class HannWindow(_Window):
    formula = staticmethod(lambda p: 0.5 - 0.5 * np.cos(p))


class HammingWindow(_Window):
    formula = staticmethod(lambda p: 25 / 46 - 21 / 46 * np.cos(p))


class BlackmanWindow(_Window):
    formula = staticmethod(lambda p: 0.42 - 0.5 * np.cos(p) + 0.08 * np.cos(2 * p))


class BitCast(OnnxOpConverter):
    """Reinterpret the bits of each element as type ``to`` (same element size)."""

    @classmethod
    def _impl_v26(cls, bb, inputs, attr, params):
        from onnx import helper as onnx_helper
        from tvm import topi

        to = np.dtype(onnx_helper.tensor_dtype_to_np_dtype(int(attr["to"]))).name
        x = inputs[0]
        if dtype_of(x) == "bool":
            x = emit(bb, _op.astype(x, "uint8"))
        if to == "bool":
            return emit(bb, _op.not_equal(x, const(0, dtype_of(x))))
        return bb.emit_te(topi.reinterpret, x, to)

    _impl_v1 = _impl_v26


class ReverseSequence(OnnxOpConverter):
    """Reverse the first seq_lens[b] elements along ``time_axis`` for each batch entry b."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        return emit(bb, _op.reverse_sequence(
            inputs[0], _op.astype(inputs[1], "int32"),
            seq_axis=int(attr.get("time_axis", 0)), batch_axis=int(attr.get("batch_axis", 1))))


class Pow(OnnxOpConverter):
    """Pow with an integer base or with base and exponent of different types (TVM lowers
    ``power`` for one float type only): computed in float64 and cast back to the base's
    type (integers truncated); same-type float Pow keeps TVM's converter."""

    @classmethod
    def _impl_v7(cls, bb, inputs, attr, params):
        base, exponent = inputs[0], inputs[1]
        dt = dtype_of(base)
        if dt.startswith("float") and dt == dtype_of(exponent):
            return tvm_converter("Pow").get_converter(7)(bb, inputs, attr, params)
        b64 = emit(bb, _op.astype(base, "float64"))
        e64 = emit(bb, _op.astype(exponent, "float64"))
        y = emit(bb, _op.power(b64, e64))
        if not dt.startswith("float"):
            y = emit(bb, _op.trunc(y))
        return emit(bb, _op.astype(y, dt))


class RMSNormalization(OnnxOpConverter):
    """Y = X / sqrt(mean(X^2 over axes axis..rank-1) + epsilon) * scale, in float32 (stash_type 1).

    TVM's converter hands every axis to ``rms_norm``, whose lowering fails when the
    normalized axes cover the whole tensor (axis 0)."""

    @classmethod
    def _impl_v23(cls, bb, inputs, attr, params):
        x, scale = inputs[0], inputs[1]
        dt = dtype_of(x)
        rank = len(shape_of(x, "RMSNormalization"))
        axis = int(attr.get("axis", -1)) % rank
        eps = float(attr.get("epsilon", 1e-5))
        x32 = emit(bb, _op.astype(x, "float32")) if dt != "float32" else x
        mean_sq = emit(bb, _op.mean(_op.multiply(x32, x32), axis=list(range(axis, rank)), keepdims=True))
        normed = emit(bb, _op.divide(x32, _op.sqrt(_op.add(mean_sq, const(eps, "float32")))))
        if dt != "float32":
            normed = emit(bb, _op.astype(normed, dt))
        return emit(bb, _op.multiply(normed, scale))


class CenterCropPad(OnnxOpConverter):
    """Crop or zero-pad each axis in ``axes`` to ``shape`` around the centre: a crop starts at
    (dim - size) // 2, a pad puts (size - dim) // 2 zeros before (ONNX reference)."""

    @classmethod
    def _impl_v18(cls, bb, inputs, attr, params):
        x = inputs[0]
        sizes = constant_value(inputs[1])
        if sizes is None:
            raise ValueError("CenterCropPad: the shape input must be a constant")
        dims = shape_of(x, "CenterCropPad")
        rank = len(dims)
        axes = [int(a) % rank for a in attr.get("axes", range(rank))]
        pad = [0] * (2 * rank)
        for axis, size in zip(axes, (int(v) for v in sizes.reshape(-1))):
            dim = dims[axis]
            if size < dim:
                start = (dim - size) // 2
                x = emit(bb, _op.strided_slice(x, axes=[axis], begin=[start], end=[start + size]))
            elif size > dim:
                pad[axis] = (size - dim) // 2
                pad[rank + axis] = size - dim - pad[axis]
        if any(pad):
            widths = [w for axis in range(rank) for w in (pad[axis], pad[rank + axis])]
            x = emit(bb, _op.nn.pad(x, widths))
        return x


class DFT(OnnxOpConverter):
    """Discrete Fourier transform along one axis as two matmuls with cos/sin matrices:
    Y[k] = scale * sum_j x[j] exp(s 2 pi i j k / L) with s = -1 (forward) or +1 (inverse,
    scale 1/L); L = dft_length (the signal zero-padded or cut to it); ``onesided`` keeps
    k <= L // 2. The last input axis holds (real) or (real, imaginary)."""

    @classmethod
    def _impl_v17(cls, bb, inputs, attr, params):
        return cls._dft(bb, inputs[0], inputs[1], int(attr.get("axis", 1)), attr)

    @classmethod
    def _impl_v20(cls, bb, inputs, attr, params):
        axis = constant_value(inputs[2]) if inputs[2] is not None else np.array(-2)
        if axis is None:
            raise ValueError("DFT: the axis input must be a constant")
        return cls._dft(bb, inputs[0], inputs[1], int(axis.reshape(-1)[0]), attr)

    @classmethod
    def _dft(cls, bb, x, length, axis: int, attr):
        out_dtype = dtype_of(x)
        dt = "float64"  # sums of many terms: float32 leaves ~1e-7 residues where 0 is exact
        x = emit(bb, _op.astype(x, dt))
        shape = shape_of(x, "DFT")
        rank = len(shape)
        axis %= rank
        n = shape[axis]
        size = n if length is None else constant_value(length)
        if size is None:
            raise ValueError("DFT: dft_length must be a constant")
        size = int(np.asarray(size).reshape(-1)[0])
        real = emit(bb, _op.squeeze(_op.strided_slice(x, axes=[rank - 1], begin=[0], end=[1]), axis=[rank - 1]))
        imag = None
        if shape[-1] == 2:
            imag = emit(bb, _op.squeeze(_op.strided_slice(x, axes=[rank - 1], begin=[1], end=[2]), axis=[rank - 1]))
        perm = [d for d in range(rank - 1) if d != axis] + [axis]
        back = np.argsort(perm).tolist()
        inverse = int(attr.get("inverse", 0))
        sign = 1.0 if inverse else -1.0
        keep = size // 2 + 1 if int(attr.get("onesided", 0)) else size
        j = np.arange(size).reshape(1, size)
        k = np.arange(keep).reshape(keep, 1)
        theta = 2 * np.pi * j * k / size
        scale = 1.0 / size if inverse else 1.0
        cos_t = const((np.cos(theta) * scale).T.astype(dt), dt)  # [L, keep]
        sin_t = const((sign * np.sin(theta) * scale).T.astype(dt), dt)

        def to_last(part):
            part = emit(bb, _op.permute_dims(part, perm))
            if size > n:
                widths = [0, 0] * (rank - 2) + [0, size - n]
                part = emit(bb, _op.nn.pad(part, widths))
            elif size < n:
                part = emit(bb, _op.strided_slice(part, axes=[rank - 2], begin=[0], end=[size]))
            return part

        xr = to_last(real)
        yr = _op.matmul(xr, cos_t)
        yi = _op.matmul(xr, sin_t)
        if imag is not None:
            xi = to_last(imag)
            yr = _op.subtract(yr, _op.matmul(xi, sin_t))
            yi = _op.add(yi, _op.matmul(xi, cos_t))
        yr = emit(bb, _op.permute_dims(emit(bb, yr), back))
        yi = emit(bb, _op.permute_dims(emit(bb, yi), back))
        return emit(bb, _op.astype(emit(bb, _op.stack([yr, yi], axis=-1)), out_dtype))


class Cosh(OnnxOpConverter):
    """cosh(x) = (exp(x) + exp(-x)) / 2 (TVM's LLVM codegen has no cosh intrinsic)."""

    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        x = inputs[0]
        both = _op.add(_op.exp(x), _op.exp(_op.negative(x)))
        return emit(bb, _op.multiply(both, const(0.5, dtype_of(x))))


class Sinh(OnnxOpConverter):
    """sinh(x) = (exp(x) - exp(-x)) / 2 (TVM's LLVM codegen has no sinh intrinsic)."""

    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        x = inputs[0]
        diff = _op.subtract(_op.exp(x), _op.exp(_op.negative(x)))
        return emit(bb, _op.multiply(diff, const(0.5, dtype_of(x))))


class IsInf(OnnxOpConverter):
    """isinf(x), restricted to +inf / -inf by ``detect_positive`` / ``detect_negative``."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x = inputs[0]
        inf = emit(bb, _op.isinf(x))
        positive = int(attr.get("detect_positive", 1))
        negative = int(attr.get("detect_negative", 1))
        if positive and negative:
            return inf
        if not positive and not negative:
            return emit(bb, _op.logical_and(inf, _op.logical_not(inf)))
        side = _op.greater(x, const(0, dtype_of(x))) if positive else _op.less(x, const(0, dtype_of(x)))
        return emit(bb, _op.logical_and(inf, side))


def convert_map() -> dict:
    """lwc's converters, ``{op type: converter class}``; they take precedence over TVM's."""
    return {
        **onnx_converters.CONVERTERS,  # ops TVM converts wrongly (field cases N1-N5)
        **onnx_ops_rnn.CONVERTERS, **onnx_ops_quant.CONVERTERS, **onnx_ops_attention.CONVERTERS,
        **CONVERTERS,
    }


def convertible_op_types() -> set[str]:
    """ONNX op types with a converter: TVM's, lwc's, and the two TVM handles inline."""
    return set(tvm_compat.onnx_convert_map()) | set(convert_map()) | {"If", "Constant"}


def supported_op_types() -> set[str]:
    """ONNX op types lwc imports: the convertible ones, ops ONNX defines as a function of
    other ops (:func:`lwc.onnx_legalize.expand_functions` inlines them before import) and
    Scan (:func:`lwc.onnx_legalize.unroll_scan` unrolls it)."""
    return convertible_op_types() | _function_op_types() | {"Scan"}


@functools.cache
def _function_op_types() -> frozenset[str]:
    from onnx import defs

    return frozenset(s.name for s in defs.get_all_schemas() if s.domain in ("", "ai.onnx")
                     and (s.has_function or s.has_context_dependent_function))


def from_onnx(model, **kwargs):
    """TVM's ``from_onnx`` with lwc's converters registered for the call.

    Every converter (TVM's and lwc's) is wrapped so that a failure names its node:
    ``node 'conv3' (Pad, opset 18): <the converter's complaint>`` (:class:`NodeError`).
    TVM's own "Error converting operator" print is kept off stdout.
    """
    opset = _onnx_opset(model)
    table = {**tvm_compat.onnx_convert_map(), **convert_map()}
    attributed = {op: _Attributed(op, cls, opset) for op, cls in table.items()}
    with tvm_compat.onnx_converters(attributed), contextlib.redirect_stdout(io.StringIO()):
        return tvm_compat.from_onnx(model, **kwargs)


class NodeError(ValueError):
    """A converter failed on one node; the message names it (name, op type, opset)."""


class _Attributed:
    """A converter whose failures name the node (what TVM's importer does not do)."""

    def __init__(self, op_type: str, converter, opset: int):
        self.op_type, self.converter, self.opset = op_type, converter, opset

    def get_converter(self, opset: int):
        impl = self.converter.get_converter(opset)

        def convert(bb, inputs, attr, params):
            try:
                return impl(bb, inputs, attr, params)
            except NodeError:
                raise
            except Exception as err:
                name = attr.get("tvm_custom", {}).get("name") or ""
                lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
                why = lines[-1] if lines else type(err).__name__
                raise NodeError(f"node {name!r} ({self.op_type}, opset {opset}): {why}") from err

        return convert


def _onnx_opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


CONVERTERS = {
    "NegativeLogLikelihoodLoss": NegativeLogLikelihoodLoss,
    "SoftmaxCrossEntropyLoss": SoftmaxCrossEntropyLoss,
    "CumProd": CumProd,
    "Swish": Swish,
    "Celu": Celu,
    "LpNormalization": LpNormalization,
    "SwiGLU": SwiGLU,
    "HannWindow": HannWindow,
    "HammingWindow": HammingWindow,
    "BlackmanWindow": BlackmanWindow,
    "BitCast": BitCast,
    "ReverseSequence": ReverseSequence,
    "Pow": Pow,
    "RMSNormalization": RMSNormalization,
    "CenterCropPad": CenterCropPad,
    "DFT": DFT,
    "Cosh": Cosh,
    "Sinh": Sinh,
    "IsInf": IsInf,
}
