"""Frontend field cases N1-N6 and the older frontend cases (shared/cases/README.md,
"Cases for the frontend work"), and "never stricter than onnxruntime".

Each model is built with onnx.helper, compiled for the host through ``lwc.driver.compile``
and run; the right value is the number the case gives, a numpy implementation of the
ONNX spec, or onnxruntime where onnxruntime is right. Beyond each case's instance, the
whole kind is tried (every pad/ceil/auto_pad form of AveragePool in 1-D/2-D/3-D, every
broadcastable PRelu slope shape, LayerNorm at every axis, the activations at large |x|
in fp32 and fp16, Resize across modes and coordinate transforms).
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from lwc import driver, onnx_legalize
from lwc.errors import LwcError
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

F32, F16, F64, I64 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.INT64


# --------------------------------------------------------------------------- helpers


def _model(nodes, inputs, opset: int, inits=(), outputs=None) -> onnx.ModelProto:
    """A one-graph model; ``inputs`` are (name, elem type, shape); outputs declare no shape."""
    graph = helper.make_graph(
        nodes, "case",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        outputs or [helper.make_tensor_value_info(nodes[-1].output[0], inputs[0][1], None)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _node(op: str, inputs, **attrs) -> onnx.NodeProto:
    return helper.make_node(op, list(inputs), ["Y"], name=op.lower(), **attrs)


def _lwc(model: onnx.ModelProto, feed: dict, **kwargs) -> list[np.ndarray]:
    return driver.compile(model, "host", **kwargs).run(feed)


def _ort(model: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def _one_op(op: str, x: np.ndarray, opset: int, inits=(), extra_inputs=(), **attrs):
    elem = helper.np_dtype_to_tensor_dtype(x.dtype)
    names = ["X", *[k for k, _ in inits], *extra_inputs]
    return _model([_node(op, names, **attrs)], [("X", elem, list(x.shape))], opset, inits)


# --------------------------------------------------------------------------- N1 AveragePool


def _pool_ref(x, kernel_shape, strides=None, pads=None, dilations=None, ceil_mode=0,
              count_include_pad=0, auto_pad="NOTSET", reduce="avg"):
    """Average/max pooling straight from the ONNX spec (AveragePool-19, "Output shape").

    Explicit pads: out = floor|ceil((in + pads - (k - 1) * d - 1) / s) + 1, dropping a
    last window that would start in the end padding (ceil_mode). SAME_*: out = ceil(in / s),
    total pad (out - 1) * s + (k - 1) * d + 1 - in, odd one at the end (UPPER) or start
    (LOWER). VALID: out = ceil((in - (k - 1) * d) / s). count_include_pad counts padded
    positions inside [-pad_begin, in + pad_end), never the ceil overhang beyond.
    """
    kernel, nd, spatial = kernel_shape, len(kernel_shape), x.shape[2:]
    strides, dilations = strides or [1] * nd, dilations or [1] * nd
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-n // s) for n, s in zip(spatial, strides)]
        total = [max(0, (o - 1) * s + e - n) for o, s, e, n in zip(out, strides, span, spatial)]
        begin = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
        pads = begin + [t - b for t, b in zip(total, begin)]
    elif auto_pad == "VALID":
        pads = [0] * (2 * nd)
        out = [-(-(n - e + 1) // s) for n, e, s in zip(spatial, span, strides)]
    else:
        pads = pads or [0] * (2 * nd)
        out = []
        for a in range(nd):
            room = spatial[a] + pads[a] + pads[a + nd] - span[a]
            o = (math.ceil if ceil_mode else math.floor)(room / strides[a]) + 1
            if ceil_mode and (o - 1) * strides[a] >= spatial[a] + pads[a]:
                o -= 1
            out.append(o)
    y = np.zeros(x.shape[:2] + tuple(out), np.float64)
    for idx in itertools.product(*[range(o) for o in out]):
        valid, padded = [], 1
        for a in range(nd):
            taps = [idx[a] * strides[a] - pads[a] + j * dilations[a] for j in range(kernel[a])]
            valid.append([t for t in taps if 0 <= t < spatial[a]])
            padded *= sum(-pads[a] <= t < spatial[a] + pads[a + nd] for t in taps)
        window = np.stack([x[(..., *q)] for q in itertools.product(*valid)], axis=-1)
        where = (..., *idx)
        if reduce == "max":
            y[where] = window.max(-1)
        else:
            y[where] = window.sum(-1) / (padded if count_include_pad else window.shape[-1])
    return y.astype(x.dtype)


N1_CASES = {
    # (a) last window in each axis covers one element
    "a": (np.tile(np.arange(1, 12, dtype=np.float32), (11, 1)).reshape(1, 1, 11, 11),
          {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1, "count_include_pad": 0},
          np.tile([1.5, 3.5, 5.5, 7.5, 9.5, 11.0], (6, 1)).reshape(1, 1, 6, 6)),
    # (b) pads reach past the input, counted (onnxruntime < 1.25 is wrong here)
    "b": (np.ones((1, 1, 2, 2), np.float32),
          {"kernel_shape": [2, 2], "strides": [1, 1], "pads": [0, 0, 1, 1], "count_include_pad": 1},
          np.array([[[[1, 0.5], [0.5, 0.25]]]])),
    # (c) ceil_mode window past the end padding: the overhang is not counted
    "c": (np.arange(1, 10, dtype=np.float32).reshape(1, 1, 9),
          {"kernel_shape": [7], "strides": [3], "pads": [0, 3], "ceil_mode": 1, "count_include_pad": 1},
          np.array([[[4.0, 5.571429, 4.0]]])),
}


@pytest.mark.parametrize("case", sorted(N1_CASES))
def test_n1_average_pool_case_values(case):
    x, attrs, want = N1_CASES[case]
    (got,) = _lwc(_one_op("AveragePool", x, 19, **attrs), {"X": x})
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_n1d_same_lower_counts_padding():
    x = np.arange(12, dtype=np.float32).reshape(1, 1, 6, 2)
    model = _one_op("AveragePool", x, 19, kernel_shape=[5, 1], auto_pad="SAME_LOWER",
                    count_include_pad=1)
    (got,) = _lwc(model, {"X": x})
    np.testing.assert_allclose(got[0, 0, :, 0], [1.2, 2.4, 4, 6, 5.6, 4.8], rtol=0, atol=1e-5)


def test_n1e_ceil_window_starting_in_padding_is_dropped():
    x = np.arange(5, dtype=np.float32).reshape(1, 1, 5)
    # ceil((5 + 2 - 3) / 3) + 1 = 3 windows, but the third would start at 6 > 5: dropped
    model = _one_op("AveragePool", x, 19, kernel_shape=[3], strides=[3], pads=[0, 2],
                    ceil_mode=1, count_include_pad=1)
    (got,) = _lwc(model, {"X": x})
    np.testing.assert_allclose(got, [[[1.0, 3.5 * 2 / 3]]], rtol=0, atol=1e-6)


def _pool_configs():
    """Seeded pad/ceil/auto_pad/dilation/count_include_pad forms in 1-D, 2-D and 3-D."""
    rng = np.random.default_rng(19)
    configs = []
    for nd, auto_pad, cip, ceil, dilated in itertools.product(
            (1, 2, 3), ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"), (0, 1), (0, 1), (0, 1)):
        if auto_pad != "NOTSET" and ceil:
            continue  # the spec allows ceil_mode only with explicit pads
        if (nd + cip + ceil + dilated + len(auto_pad)) % 3:  # a seeded third of the grid
            continue
        kernel = [int(k) for k in rng.integers(1, 5, nd)]
        dil = [int(d) for d in rng.integers(1, 3, nd)] if dilated else [1] * nd
        attrs = {"kernel_shape": kernel, "strides": [int(s) for s in rng.integers(1, 4, nd)],
                     "ceil_mode": ceil, "count_include_pad": cip, "dilations": dil}
        if auto_pad == "NOTSET":
            span = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
            attrs["pads"] = [int(rng.integers(0, s)) for s in span * 2]
        else:
            attrs["auto_pad"] = auto_pad
        shape = [1, 2] + [int(n) + 7 for n in rng.integers(0, 3, nd)]
        configs.append(pytest.param(shape, attrs, id=f"{nd}d-{auto_pad}-cip{cip}-ceil{ceil}-dil{dilated}"))
    return configs


@pytest.mark.parametrize("op", ["AveragePool", "MaxPool"])
def test_n1_pooling_every_pad_form_matches_the_spec(op):
    """One model per op holding every form (one node each), checked against the spec."""
    rng = np.random.default_rng(0)
    nodes, inputs, outputs, feed, want = [], [], [], {}, []
    for i, param in enumerate(_pool_configs()):
        shape, attrs = param.values
        if op == "MaxPool":
            attrs = {k: v for k, v in attrs.items() if k != "count_include_pad"}
        x = rng.standard_normal(shape).astype(np.float32)
        nodes.append(helper.make_node(op, [f"x{i}"], [f"y{i}"], name=param.id, **attrs))
        inputs.append((f"x{i}", F32, shape))
        outputs.append(helper.make_tensor_value_info(f"y{i}", F32, None))
        feed[f"x{i}"] = x
        want.append(_pool_ref(x, reduce="max" if op == "MaxPool" else "avg", **attrs))
    got = _lwc(_model(nodes, inputs, 19, outputs=outputs), feed)
    for param, g, w in zip(_pool_configs(), got, want):
        assert g.shape == w.shape, param.id
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=param.id)


# --------------------------------------------------------------------------- N2 BatchNormalization


def test_n2_batch_norm_first_op_uses_running_statistics():
    x = (np.random.default_rng(0).standard_normal((2, 3, 4, 4)) * 2 + 1).astype(np.float32)
    stats = {"s": [1, 2, 0.5], "b": [0, 0.1, -0.2], "m": [0.5, -0.5, 1], "v": [0.25, 1, 4]}
    inits = {k: np.array(v, np.float32) for k, v in stats.items()}
    model = _one_op("BatchNormalization", x, 15, inits=inits.items(), epsilon=1e-5)
    (got,) = _lwc(model, {"X": x})
    np.testing.assert_allclose(got[0, :, 0, 0], [1.502891, 0.922960, -0.279612], atol=1e-5)
    s, b, m, v = (inits[k].reshape(1, 3, 1, 1) for k in "sbmv")
    np.testing.assert_allclose(got, (x - m) / np.sqrt(v + 1e-5) * s + b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [[2, 3], [2, 3, 5], [1, 3, 2, 3, 2]])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_n2_batch_norm_any_rank_and_fp16(shape, dtype):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    inits = {k: rng.uniform(0.5, 2, 3).astype(dtype) for k in "sbmv"}
    (got,) = _lwc(_one_op("BatchNormalization", x, 15, inits=inits.items()), {"X": x})
    s, b, m, v = (inits[k].astype(np.float64).reshape([1, 3] + [1] * (len(shape) - 2)) for k in "sbmv")
    want = (x.astype(np.float64) - m) / np.sqrt(v + 1e-5) * s + b
    np.testing.assert_allclose(got, want, rtol=1e-3 if dtype == np.float16 else 1e-5,
                               atol=1e-2 if dtype == np.float16 else 1e-5)


# --------------------------------------------------------------------------- N3 PRelu


N3_CASES = {
    "a": ((np.arange(-32, 32, dtype=np.float32) / 8).reshape(1, 4, 4, 4), [0.1, 0.2, 0.3, 0.4]),
    "b": (-np.ones((1, 2, 2, 3), np.float32), [[[0.1, 0.2, 0.3]], [[0.4, 0.5, 0.6]]]),
    "c": (np.linspace(-3, 3, 32, dtype=np.float32), [0.25]),
    "d": (np.linspace(-3, 3, 32, dtype=np.float32).reshape(2, 16), [[0.25]]),
}


@pytest.mark.parametrize("case", sorted(N3_CASES))
def test_n3_prelu_slope_broadcasts_numpy_style(case):
    x, slope = N3_CASES[case]
    slope = np.array(slope, np.float32)
    (got,) = _lwc(_one_op("PRelu", x, 16, inits=[("S", slope)]), {"X": x})
    np.testing.assert_allclose(got, np.where(x < 0, x * slope, x), rtol=0, atol=1e-6)
    if case == "a":
        np.testing.assert_allclose(got[0, 0, 0], [-0.4, -0.775, -1.125, -1.45], atol=1e-6)


def test_n3_prelu_every_broadcastable_slope_shape():
    """All 31 slope shapes that broadcast to [2, 3, 4, 5], constant and as graph input."""
    shape = [2, 3, 4, 5]
    slopes = sorted({s for r in range(5) for s in itertools.product(*[(1, d) for d in shape[4 - r:]])})
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    nodes, inits, outputs, want = [], {}, [], []
    for i, s in enumerate(slopes):
        inits[f"s{i}"] = rng.uniform(0.05, 0.9, s).astype(np.float32)
        nodes.append(helper.make_node("PRelu", ["X", f"s{i}"], [f"y{i}"], name=f"prelu_{s}"))
        outputs.append(helper.make_tensor_value_info(f"y{i}", F32, None))
        want.append(np.where(x < 0, x * inits[f"s{i}"], x))
    # the slope of the last node as a graph input, not a constant
    last = f"s{len(slopes) - 1}"
    feed = {"X": x, last: inits.pop(last)}
    inputs = [("X", F32, shape), (last, F32, list(slopes[-1]))]
    got = _lwc(_model(nodes, inputs, 16, inits.items(), outputs), feed)
    for s, g, w in zip(slopes, got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-6, err_msg=f"slope shape {s}")


# --------------------------------------------------------------------------- N4 LayerNormalization


def _layer_norm_ref(x, scale, bias, axis, eps=1e-5):
    x64 = x.astype(np.float64)
    axes = tuple(range(axis % x.ndim, x.ndim))
    mean = x64.mean(axes, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axes, keepdims=True)
    return (x64 - mean) / np.sqrt(var + eps) * scale + bias, mean, 1 / np.sqrt(var + eps)


def test_n4a_layer_norm_two_pass_variance():
    x = np.array([[80000, 80001, 80002, 80003]], np.float32)
    inits = [("S", np.ones(4, np.float32)), ("B", np.zeros(4, np.float32))]
    (got,) = _lwc(_one_op("LayerNormalization", x, 17, inits, axis=-1, epsilon=1e-5), {"X": x})
    np.testing.assert_allclose(got, [[-1.341635, -0.447212, 0.447212, 1.341635]], atol=1e-5)


def test_n4b_layer_norm_fp16_statistics_in_fp32():
    """onnxruntime and onnx.reference give NaN here; the right value is [[1, -1]]."""
    x = np.array([[256, -256]], np.float16)
    inits = [("S", np.ones(2, np.float16)), ("B", np.zeros(2, np.float16))]
    model = _one_op("LayerNormalization", x, 17, inits, axis=-1, epsilon=0.0, stash_type=1)
    (got,) = _lwc(model, {"X": x})
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, [[1, -1]])


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_n4_layer_norm_every_axis_with_offset(dtype):
    """Every axis of a rank-4 input, data 1e4 (fp32) / 100 (fp16) away from 0, Scale and B
    of the normalized shape; one model, one node per axis."""
    shape, offset = [2, 3, 4, 5], 1e4 if dtype == np.float32 else 100.0
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(shape) * 2 + offset).astype(dtype)
    nodes, inits, outputs, want = [], {}, [], []
    for i, axis in enumerate(range(-4, 4)):
        norm = shape[axis:]
        inits[f"s{i}"] = rng.uniform(0.5, 1.5, norm).astype(dtype)
        inits[f"b{i}"] = rng.standard_normal(norm).astype(dtype)
        nodes.append(helper.make_node("LayerNormalization", ["X", f"s{i}", f"b{i}"], [f"y{i}"],
                                      name=f"ln_axis{axis}", axis=axis))
        outputs.append(helper.make_tensor_value_info(f"y{i}", helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), None))
        want.append(_layer_norm_ref(x, inits[f"s{i}"], inits[f"b{i}"], axis)[0])
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    got = _lwc(_model(nodes, [("X", elem, shape)], 17, inits.items(), outputs), {"X": x})
    tol = {"rtol": 0, "atol": 1e-4} if dtype == np.float32 else {"rtol": 0, "atol": 2e-2}
    for axis, g, w in zip(range(-4, 4), got, want):
        np.testing.assert_allclose(g.astype(np.float64), w, err_msg=f"axis {axis}", **tol)


def test_n4_layer_norm_mean_and_inv_std_dev_outputs():
    x = (np.random.default_rng(5).standard_normal((2, 3, 4)) + 50).astype(np.float32)
    node = helper.make_node("LayerNormalization", ["X", "S"], ["Y", "Mean", "InvStd"], axis=1)
    outputs = [helper.make_tensor_value_info(n, F32, None) for n in ("Y", "Mean", "InvStd")]
    model = _model([node], [("X", F32, [2, 3, 4])], 17, [("S", np.full((3, 4), 2, np.float32))], outputs)
    y, mean, inv_std = _lwc(model, {"X": x})
    want_y, want_mean, want_inv = _layer_norm_ref(x, 2.0, 0.0, 1)
    np.testing.assert_allclose(y, want_y.reshape(2, 3, 4), atol=1e-4)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-6)
    np.testing.assert_allclose(inv_std, want_inv, rtol=1e-4)


# --------------------------------------------------------------------------- N5 Softplus / Mish


N5_X = np.array([-100, -20, 0, 20.1, 88, 100, 200], np.float32)
N5_WANT = {
    "Softplus": [0, 2.0611537e-9, 0.693147, 20.1, 88, 100, 200],
    "Mish": [-0.0, -4.1223072e-8, 0, 20.1, 88, 100, 200],
}


@pytest.mark.parametrize("op,opset", [("Softplus", 1), ("Softplus", 22), ("Mish", 18)])
def test_n5_activation_large_inputs(op, opset):
    (got,) = _lwc(_one_op(op, N5_X, opset), {"X": N5_X})
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, N5_WANT[op], rtol=1e-5, atol=1e-30)


def test_n5_softplus_float64_has_no_threshold():
    x = np.array([20.1, 25.0, -30.0], np.float64)
    (got,) = _lwc(_one_op("Softplus", x, 22), {"X": x})
    np.testing.assert_allclose(got, [20.10000000186501, 25.000000000013888, 9.357622968839737e-14],
                               rtol=1e-15)


_LARGE = np.array([-1e4, -200, -100, -88, -20, -1, -1e-3, 0, 1e-3, 1, 20.1, 25, 60, 88, 89, 100,
                   200, 1e4])


def _exact(op: str, x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    softplus = np.logaddexp(0, x)
    return {
        "Softplus": softplus,
        "Mish": x * np.tanh(softplus),
        "Elu": np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
        "Selu": 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(np.minimum(x, 0))),
        "Sigmoid": 0.5 * (1 + np.tanh(x / 2)),
        "Tanh": np.tanh(x),
        "Softsign": x / (1 + np.abs(x)),
        "HardSwish": x * np.clip(x / 6 + 0.5, 0, 1),
    }[op]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_n5_activations_large_inputs_fp32_fp16(dtype):
    """Softplus, Mish, Elu, Selu and neighbours over |x| up to 1e4: no inf, no NaN, right."""
    ops = ["Softplus", "Mish", "Elu", "Selu", "Sigmoid", "Tanh", "Softsign", "HardSwish"]
    x = _LARGE.astype(dtype)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes = [helper.make_node(op, ["X"], [op], name=op) for op in ops]
    outputs = [helper.make_tensor_value_info(op, elem, None) for op in ops]
    got = _lwc(_model(nodes, [("X", elem, [len(x)])], 18, outputs=outputs), {"X": x})
    for op, g in zip(ops, got):
        want = _exact(op, x).astype(dtype)
        assert np.isfinite(g).all(), op
        tol = {"rtol": 1e-5, "atol": 1e-37} if dtype == np.float32 else {"rtol": 2e-3, "atol": 1e-7}
        np.testing.assert_allclose(g.astype(np.float64), want.astype(np.float64), err_msg=op, **tol)


# --------------------------------------------------------------------------- N6 Reshape with 0


@pytest.mark.parametrize("x_shape,shape,allowzero,want", [
    ((2, 3), [0, 3], 0, (2, 3)),
    ((2, 3, 4), [0, -1], 0, (2, 12)),
    ((0, 2), [0, 2], 1, (0, 2)),
], ids=["a", "b", "c-allowzero-empty"])
def test_n6_reshape_with_zero(x_shape, shape, allowzero, want):
    x = np.arange(int(np.prod(x_shape)), dtype=np.float32).reshape(x_shape)
    model = _one_op("Reshape", x, 14, [("shape", np.array(shape, np.int64))], allowzero=allowzero)
    (got,) = _lwc(model, {"X": x})
    assert got.shape == want
    np.testing.assert_array_equal(got, x.reshape(want))


def _reshape_symbolic_n() -> onnx.ModelProto:
    return _model([_node("Reshape", ["X", "shape"])], [("X", F32, ["N", 3, 4])], 14,
                  [("shape", np.array([0, -1], np.int64))])


@pytest.mark.parametrize("n", [1, 2, 5])
def test_n6d_reshape_symbolic_n_every_fixed_n(n):
    x = np.arange(n * 12, dtype=np.float32).reshape(n, 3, 4)
    (got,) = _lwc(_reshape_symbolic_n(), {"X": x}, input_shapes={"X": [n, 3, 4]})
    np.testing.assert_array_equal(got, x.reshape(n, 12))


def test_n6d_reshape_one_artifact_for_every_n():
    """A range for N (``--input-shape X:1..8,3,4``) keeps N symbolic: one artifact."""
    result = driver.compile(_reshape_symbolic_n(), "host", input_shapes={"X": ["1..8", 3, 4]})
    assert result.describe()["inputs"][0]["dims"] == {"N": [1, 8]}
    for n in (1, 2, 5):
        x = np.arange(n * 12, dtype=np.float32).reshape(n, 3, 4)
        (got,) = result.run({"X": x})
        np.testing.assert_array_equal(got, x.reshape(n, 12))


# --------------------------------------------------------------------------- older frontend cases


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_opset13_fractional_scale_half_pixel(mode):
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    model = _one_op("Resize", x, 13, [("roi", np.zeros(0, np.float32)),
                                      ("scales", np.array([1, 1, 2.5, 2.5], np.float32))],
                    mode=mode, coordinate_transformation_mode="half_pixel")
    (got,) = _lwc(model, {"X": x})
    (want,) = _ort(model, {"X": x})
    assert got.shape == (1, 1, 7, 7)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got, ReferenceEvaluator(model).run(None, {"X": x})[0], atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_opset11_empty_scales_with_sizes(mode):
    x = np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4)
    inits = [("roi", np.zeros(0, np.float32)), ("scales", np.zeros(0, np.float32)),
             ("sizes", np.array([1, 2, 8, 8], np.int64))]
    model = _one_op("Resize", x, 11, inits, mode=mode)
    (got,) = _lwc(model, {"X": x})
    np.testing.assert_allclose(got, _ort(model, {"X": x})[0], rtol=0, atol=1e-5)


def test_resize_sizes_from_shape_slice_concat():
    nodes = [helper.make_node("Shape", ["X"], ["s"]),
             helper.make_node("Slice", ["s", "start", "end"], ["nc"]),
             helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
             _node("Resize", ["X", "", "", "sizes"], mode="linear")]
    inits = {"start": np.array([0], np.int64), "end": np.array([2], np.int64),
             "hw": np.array([7, 9], np.int64)}
    model = _model(nodes, [("X", F32, [1, 2, 4, 4])], 13, inits.items())
    x = np.random.default_rng(6).standard_normal((1, 2, 4, 4)).astype(np.float32)
    (got,) = _lwc(model, {"X": x})
    assert got.shape == (1, 2, 7, 9)
    np.testing.assert_allclose(got, _ort(model, {"X": x})[0], rtol=0, atol=1e-5)


def _resize_configs():
    for opset, mode, coord, how in itertools.product(
            (11, 19), ("nearest", "linear", "cubic"),
            ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel",
             "tf_crop_and_resize", "half_pixel_symmetric"),
            ("int", "frac", "down", "sizes")):
        if coord == "half_pixel_symmetric" and opset < 19:
            continue
        if (len(mode) + len(coord) + len(how) + opset) % 3 == 0:  # a seeded third
            yield opset, mode, coord, how


@pytest.mark.parametrize("opset", [11, 19])
def test_resize_modes_and_coordinate_transforms_match_onnxruntime(opset):
    """Nearest (each rounding) / linear / cubic (exclude_outside too) x every coordinate
    transform x integer, fractional, downscaling scales and sizes, 4-D; one model holds
    every form (one node each)."""
    rng = np.random.default_rng(7)
    scales = {"int": [1, 1, 2, 3], "frac": [1, 1, 2.5, 1.7], "down": [1, 1, 0.6, 0.5]}
    nodes, inits, outputs, labels = [], {}, [], []
    for i, (op_set, mode, coord, how) in enumerate(_resize_configs()):
        if op_set != opset:
            continue
        attrs = {"mode": mode, "coordinate_transformation_mode": coord, "extrapolation_value": -1.0}
        if mode == "nearest":
            attrs["nearest_mode"] = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")[i % 4]
        if mode == "cubic":
            attrs["exclude_outside"] = i % 2
        roi = [0, 0, 0.1, 0.2, 1, 1, 0.8, 0.9] if coord == "tf_crop_and_resize" else []
        inits[f"roi{i}"] = np.array(roi, np.float32)
        names = ["X", f"roi{i}", f"scales{i}"]
        if how == "sizes":
            inits[f"scales{i}"] = np.zeros(0, np.float32)
            inits[f"sizes{i}"] = np.array([1, 2, 7, 13], np.int64)
            names.append(f"sizes{i}")
        else:
            inits[f"scales{i}"] = np.array(scales[how], np.float32)
        nodes.append(helper.make_node("Resize", names, [f"y{i}"], name=f"resize{i}", **attrs))
        outputs.append(helper.make_tensor_value_info(f"y{i}", F32, None))
        labels.append(f"{attrs} {how}")
    x = rng.standard_normal((1, 2, 9, 8)).astype(np.float32)
    model = _model(nodes, [("X", F32, [1, 2, 9, 8])], opset, inits.items(), outputs)
    got, want = _lwc(model, {"X": x}), _ort(model, {"X": x})
    for label, g, w in zip(labels, got, want):
        assert g.shape == w.shape, label
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5, err_msg=label)


@pytest.mark.parametrize("opset,attrs,inits", [
    (10, {"mode": "linear"}, [("scales", [1, 1, 0.5, 0.7])]),
    (10, {"mode": "nearest"}, [("scales", [1, 1, 2, 1.5])]),
    (18, {"mode": "linear", "axes": [3, 2], "keep_aspect_ratio_policy": "not_larger"}, [("", []), ("", []), ("sizes", [9, 7])]),
    (18, {"mode": "cubic", "axes": [2]}, [("", []), ("scales", [1.5])]),
], ids=["opset10-linear-down", "opset10-nearest-up", "axes-keep-aspect", "axes-scales"])
def test_resize_opset10_and_axes(opset, attrs, inits):
    x = np.random.default_rng(8).standard_normal((1, 2, 6, 5)).astype(np.float32)
    names = ["X"] + [n for n, _ in inits]
    values = {n: np.array(v, np.int64 if n == "sizes" else np.float32) for n, v in inits if n}
    model = _model([_node("Resize", names, **attrs)], [("X", F32, [1, 2, 6, 5])], opset, values.items())
    (got,) = _lwc(model, {"X": x})
    np.testing.assert_allclose(got, _ort(model, {"X": x})[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("x_shape,kernel", [((1, 1, 3, 3), 3), ((1, 1, 3, 4), 3), ((1, 1, 4, 4), 2)])
def test_conv_transpose_output_shape(x_shape, kernel):
    rng = np.random.default_rng(9)
    x = rng.standard_normal(x_shape).astype(np.float32)
    inits = [("W", rng.standard_normal((1, 2, kernel, kernel)).astype(np.float32)),
             ("B", np.array([0.5, -1.0], np.float32))]
    model = _one_op("ConvTranspose", x, 13, inits, strides=[3, 2], output_shape=[10, 8])
    (got,) = _lwc(model, {"X": x})
    assert got.shape == (1, 2, 10, 8)
    np.testing.assert_allclose(got, _ort(model, {"X": x})[0], rtol=1e-5, atol=1e-5)


def test_layer_norm_axis1_scale_broadcast_over_normalized_axes():
    x = np.random.default_rng(10).standard_normal((1, 3, 4, 4)).astype(np.float32)
    inits = [("S", np.array([1, 2, 3, 4], np.float32)), ("B", np.array([0.1, 0.2, 0.3, 0.4], np.float32))]
    model = _one_op("LayerNormalization", x, 17, inits, axis=1)
    (got,) = _lwc(model, {"X": x})
    np.testing.assert_allclose(got, _ort(model, {"X": x})[0], rtol=1e-5, atol=1e-5)


def _pad_model() -> onnx.ModelProto:
    return _model([_node("Pad", ["X", "pads"])], [("X", F32, [3, 4]), ("pads", I64, [4])], 13)


def test_pad_with_pads_input_bound_at_compile_time():
    pads = np.array([0, 1, 0, 1], np.int64)
    bound = onnx_legalize.bind_inputs(_pad_model(), {"pads": pads})
    x = np.ones((3, 4), np.float32)
    (got,) = _lwc(bound, {"X": x})
    (want,) = _ort(_pad_model(), {"X": x, "pads": pads})
    assert got.shape == (3, 6)
    np.testing.assert_array_equal(got, want)


def test_pad_with_unbound_pads_input_is_one_line_naming_the_node():
    with pytest.raises(LwcError) as err:
        driver.compile(_pad_model(), "host")
    message = str(err.value)
    assert "\n" not in message and "'pad'" in message and "Pad" in message and "opset 13" in message


# --------------------------------------------------------------------------- never stricter than onnxruntime


def _lwc_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lwc", *args], capture_output=True, text=True,
                          timeout=300, check=False)


def _cli_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("lwc: compiling ")]


def test_outputs_without_shape_compile():
    """Many exporters declare graph outputs with no shape; onnxruntime runs them."""
    x = np.random.default_rng(11).standard_normal((2, 3)).astype(np.float32)
    model = _one_op("Relu", x, 17)
    assert not model.graph.output[0].type.tensor_type.HasField("shape")
    (got,) = _lwc(model, {"X": x})
    np.testing.assert_array_equal(got, np.maximum(x, 0))


def test_scalar_inputs_and_outputs_stay_0d():
    model = _model([helper.make_node("Mul", ["X", "s"], ["Y"]),
                    helper.make_node("ReduceSum", ["Y"], ["total"], keepdims=0)],
                   [("X", F32, [2, 3]), ("s", F32, [])], 17,
                   outputs=[helper.make_tensor_value_info(n, F32, None) for n in ("Y", "total")])
    x, s = np.ones((2, 3), np.float32), np.array(3.0, np.float32)
    result = driver.compile(model, "host")
    assert [i["shape"] for i in result.describe()["inputs"]] == [[2, 3], []]
    y, total = result.run({"X": x, "s": s})
    np.testing.assert_array_equal(y, 3 * x)
    assert total.shape == () and total == 18


def test_zero_size_dims_declared_and_given():
    empty = np.zeros((0, 3), np.float32)
    declared = _model([helper.make_node("Concat", ["X", "Z"], ["Y"], axis=0)],
                      [("X", F32, [2, 3]), ("Z", F32, [0, 3])], 14)
    (got,) = _lwc(declared, {"X": np.ones((2, 3), np.float32), "Z": empty})
    np.testing.assert_array_equal(got, np.ones((2, 3)))
    dynamic = _model([_node("Relu", ["X"])], [("X", F32, ["L", 3])], 14)
    (got,) = _lwc(dynamic, {"X": empty}, input_shapes={"X": [0, 3]})
    assert got.shape == (0, 3)


def test_cli_compiles_shapeless_outputs_scalars_and_zero_size_dims(tmp_path):
    """`lwc compile` takes an output with no shape, a 0-d input and ``--input-shape X:0,3``."""
    path = tmp_path / "model.onnx"
    model = _model([_node("Mul", ["X", "s"])], [("X", F32, ["L", 3]), ("s", F32, [])], 14)
    onnx.save(model, str(path))
    proc = _lwc_cli("compile", str(path), "--input-shape", "X:0,3", "-o", str(tmp_path / "m.so"), "-q")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert [i["shape"] for i in manifest["inputs"]] == [[0, 3], []]


def _antialias_resize() -> onnx.ModelProto:
    x = np.zeros((1, 1, 8, 8), np.float32)
    return _one_op("Resize", x, 18, [("roi", np.zeros(0, np.float32)),
                                     ("scales", np.array([1, 1, 0.5, 0.5], np.float32))],
                   mode="linear", antialias=1)


def test_refusal_is_one_line_naming_node_op_and_opset(tmp_path):
    with pytest.raises(LwcError) as err:
        driver.compile(_antialias_resize(), "host")
    assert str(err.value) == ("cannot import node 'resize' (Resize, opset 18): "
                              "Resize: antialias is not supported")
    path = tmp_path / "aa.onnx"
    onnx.save(_antialias_resize(), str(path))
    proc = _lwc_cli("compile", str(path), "-o", str(tmp_path / "aa.so"))
    assert proc.returncode == 2
    assert _cli_lines(proc) == [f"lwc: error: {err.value}"], proc.stderr
    assert not list(tmp_path.glob("aa.so*"))


def test_tvm_internal_text_never_reaches_the_user(monkeypatch):
    """A converter failing with TVM's IR text still gives one clean line."""
    from lwc import onnx_converters

    class Broken(onnx_converters.OnnxOpConverter):
        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            raise ValueError('Check failed: R.add(R.const(1, "float32"), lv) uses tvm::relax')

    monkeypatch.setitem(onnx_converters.CONVERTERS, "Softplus", Broken)
    with pytest.raises(LwcError) as err:
        driver.compile(_one_op("Softplus", N5_X, 22), "host")
    message = str(err.value)
    assert message.startswith("cannot import node 'softplus' (Softplus, opset 22): ")
    assert "R.add" not in message and "tvm::" not in message and "\n" not in message


def test_input_without_shape_asks_for_input_shape():
    """An input declaring no shape (unknown rank) is not taken as a scalar."""
    model = _model([_node("Relu", ["X"])], [("X", F32, None)], 14)
    with pytest.raises(LwcError, match=r"input 'X' declares no shape .* --input-shape X:"):
        driver.compile(model, "host")
    x = np.array([[-1.0, 2.0]], np.float32)
    (got,) = _lwc(model, {"X": x}, input_shapes={"X": [1, 2]})
    np.testing.assert_array_equal(got, [[0.0, 2.0]])


def test_unsupported_op_names_node_and_opset():
    model = _model([_node("FancyNorm", ["X"])], [("X", F32, [2])], 17)
    model.graph.node[0].domain = "com.acme"
    model.opset_import.append(helper.make_opsetid("com.acme", 3))
    with pytest.raises(LwcError, match=r"com\.acme::FancyNorm \(node 'fancynorm', opset 3\)"):
        driver.compile(model, "host")
