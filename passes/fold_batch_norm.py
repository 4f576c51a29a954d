"""FoldBatchNorm: fold inference BatchNorm and constant scale/shift into conv/matmul weights.

Math (per output channel c; BatchNorm from Ioffe & Szegedy 2015, inference form)::

    BN(y) = gamma * (y - mean) / sqrt(var + eps) + beta
    with y = conv(x, W) + b and s = gamma / sqrt(var + eps):
        W' = W * s,   b' = (b - mean) * s + beta

A constant per-channel ``Mul``/``Div``/``Add``/``Sub`` after the op folds the same way
(y * k: W' = W k, b' = b k; y / k: W' = W / k, b' = b / k; y + t: b' = b + t; y - t: b' = b - t);
chains fold one link at a time until nothing matches.

Producers: ``conv2d`` (NCHW/OIHW, any groups; channel = weight axis 0),
``conv2d_transpose`` (NCHW/IOHW, groups 1; weight axis 1) and ``matmul`` with a constant
2-D weight (channel = last axis).
Preconditions, else declined with the reason: the weight (and bias) are constants; the
producer's output has no other reader; the scale/shift varies only along the channel
axis; for Div, no zero divisor.

Before::  lv = conv2d(x, W); lv2 = add(lv, reshape(b)); lv3 = batch_norm(lv2, g, be, mu, v); lv4 = lv3[0]
After::   lv4 = add(conv2d(x, W'), b')

This module is lwc's one BatchNorm fold. The math is :func:`batch_norm_scale_shift`
(BN as a per-channel scale and shift) and :func:`fold_scale_shift` (into W and b); it is
applied at two levels of the same flow:

* Relax (:class:`FoldBatchNorm`, every compile): in lwc's pass pipeline, with the affine
  folds, conv2d_transpose and matmul producers, ``--disable-pass`` and decline reasons.
* ONNX (:func:`fold_batch_norm_onnx`, ``--quantize int8`` only): Conv (or ConvTranspose,
  groups 1) -> BatchNormalization is folded before calibration, because the int8 flow works on the ONNX graph
  (:mod:`lwc.quantize`): onnxruntime observes the activation ranges and the per-layer
  errors on it, and the per-channel weight scales must come from the folded weights; the
  QDQ pairs are written into that graph, so a fold after import would meet int8 weights.
  It computes in float64 and rounds once to float32, as the int8 flow's own fold did (the
  same float32 weights on the PP-OCR models); the Relax pass computes in the weight's dtype.

Calibrating on the Relax-folded graph instead would need a TVM build of the fp32 model
per calibration and fallback run, and QDQ insertion in Relax; folding at the ONNX level
for fp32 compiles too would change fp32 weights (float64 math) and lose the Relax
pass's producers and reports. Hence one fold, two entry points.
"""

from __future__ import annotations

import numpy as np
import onnx
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, is_tuple_get_item, rewrite_call, wildcard

from lwc.passes._support import (
    Bindings,
    PassStats,
    const,
    const_value,
    rewrite_functions,
    tensor_shape,
)

_AFFINE = ("relax.multiply", "relax.divide", "relax.add", "relax.subtract")
_COMMUTATIVE = ("relax.multiply", "relax.add")


def batch_norm_scale_shift(gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray,
                           eps) -> tuple[np.ndarray, np.ndarray]:
    """Inference BatchNorm as ``y * scale + shift`` per channel, in the arrays' dtype:
    scale = gamma / sqrt(var + eps), shift = beta - mean * scale."""
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


def fold_scale_shift(weight: np.ndarray, bias: np.ndarray, scale: np.ndarray, shift: np.ndarray,
                     axis: int) -> tuple[np.ndarray, np.ndarray]:
    """``op(x, W) + b`` followed by ``* scale + shift`` (per output channel, ``axis`` of
    W) as one op: (W * scale, b * scale + shift), in the arrays' dtype."""
    shape = [1] * weight.ndim
    shape[axis] = -1
    return weight * scale.reshape(shape), bias * scale + shift


class _Decline(Exception):
    pass


class _Producer:
    """The conv/matmul feeding the folded op, with its weight and bias as numpy arrays."""

    def __init__(self, call, bias_expr):
        self.call = call
        self.op = call.op.name
        attrs = call.attrs
        if self.op == "relax.nn.conv2d":
            if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
                raise _Decline(f"conv layout {attrs.data_layout}/{attrs.kernel_layout} not NCHW/OIHW")
            self.w_axis, self.out_axis = 0, 1
        elif self.op == "relax.nn.conv2d_transpose":
            if attrs.data_layout != "NCHW" or attrs.kernel_layout != "IOHW" or int(attrs.groups) != 1:
                raise _Decline("conv2d_transpose is grouped or not NCHW/IOHW")
            self.w_axis, self.out_axis = 1, 1
        else:  # matmul
            self.w_axis, self.out_axis = -1, -1
        self.weight = const_value(call.args[1])
        if self.weight is None:
            raise _Decline("weight is not constant")
        if self.weight.dtype.kind != "f" or str(call.ty.dtype) not in ("float16", "float32", "float64"):
            # int8 x int8 -> int32 kernels: scaling would change the integer arithmetic
            raise _Decline(f"{self.op} computes in {call.ty.dtype}, not floating point")
        if self.op == "relax.matmul" and self.weight.ndim != 2:
            raise _Decline("matmul weight is not 2-D")
        self.channels = self.weight.shape[self.w_axis]
        self.out_ndim = len(call.ty.shape.values)
        if bias_expr is None:
            self.bias = np.zeros(self.channels, self.weight.dtype)
        else:
            self.bias = self.per_channel(_bias_value(bias_expr), "bias")

    def per_channel(self, value: np.ndarray, what: str) -> np.ndarray:
        """``value`` as a length-C vector, if it varies only along the output channel axis."""
        if value is None:
            raise _Decline(f"{what} is not constant")
        if value.ndim > self.out_ndim:
            raise _Decline(f"{what} has more dims than the output")
        full = value.reshape((1,) * (self.out_ndim - value.ndim) + value.shape)
        axis = self.out_axis % self.out_ndim
        if any(d != 1 for i, d in enumerate(full.shape) if i != axis):
            raise _Decline(f"{what} {list(value.shape)} varies along non-channel axes")
        vec = full.reshape(-1)
        if vec.size not in (1, self.channels):
            raise _Decline(f"{what} has {vec.size} values for {self.channels} channels")
        return np.broadcast_to(vec, (self.channels,)).astype(self.weight.dtype)

    def vector(self, value: np.ndarray, what: str) -> np.ndarray:
        """A batch_norm parameter (1-D, one value per channel) as a length-C vector."""
        if value is None:
            raise _Decline(f"{what} is not constant")
        if value.ndim != 1 or value.size != self.channels:
            raise _Decline(f"{what} has shape {list(value.shape)}, expected [{self.channels}]")
        return value.astype(self.weight.dtype)

    def rebuild(self, scale: np.ndarray, shift: np.ndarray):
        """add(op(x, W * scale), bias * scale + shift) as a new expression."""
        weight, bias = fold_scale_shift(self.weight, self.bias, scale, shift, self.w_axis)
        weight, bias = weight.astype(self.weight.dtype), bias.astype(self.weight.dtype)
        bias_shape = [1] * self.out_ndim
        bias_shape[self.out_axis] = self.channels
        call = relax.Call(self.call.op, [self.call.args[0], const(weight)], self.call.attrs)
        return relax.op.add(call, const(bias.reshape(bias_shape)))


def _bias_value(expr) -> np.ndarray | None:
    if isinstance(expr, relax.Call) and expr.op.name == "relax.reshape":
        value = const_value(expr.args[0])
        shape = tensor_shape(expr)
        return None if value is None or shape is None else value.reshape(shape)
    return const_value(expr)


def _producer_pattern():
    x, w = wildcard(), wildcard()
    prod = (
        is_op("relax.nn.conv2d")(x, w)
        | is_op("relax.nn.conv2d_transpose")(x, w)
        | is_op("relax.matmul")(x, w)
    )
    bias = is_const() | is_op("relax.reshape")(is_const(), wildcard())
    with_bias = is_op("relax.add")(prod, bias)
    return prod, bias, with_bias | prod


@tvm.transform.module_pass(opt_level=0, name="FoldBatchNorm")
class FoldBatchNorm:
    """Fold batch_norm (inference) and constant per-channel scale/shift into conv/matmul."""

    def __init__(self, max_rounds: int = 16):
        self.max_rounds = max_rounds
        self.stats = PassStats()

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        self.stats = PassStats()
        return rewrite_functions(mod, self._rewrite)

    def _rewrite(self, func: relax.Function) -> relax.Function:
        for _ in range(self.max_rounds):
            before = sum(self.stats.changed.values())
            self._declined_seen = set()
            func = self._fold_batch_norm(func)
            func = self._fold_affine(func)
            if sum(self.stats.changed.values()) == before:
                break
        return func

    def _decline(self, where: str, reason: str) -> None:
        if (where, reason) not in self.stats.declined:
            self.stats.declined.append((where, reason))

    def _producer(self, m, prod, bias, base, bindings) -> _Producer:
        if not bindings.single_use(m[prod]) or (
            not m[base].same_as(m[prod]) and not bindings.single_use(m[base])
        ):
            raise _Decline(f"{m[prod].op.name.split('.')[-1]} output has other readers")
        return _Producer(m[prod], m.get(bias) if not m[base].same_as(m[prod]) else None)

    def _fold_batch_norm(self, func):
        prod, bias, base = _producer_pattern()
        gamma, beta, mean, var = wildcard(), wildcard(), wildcard(), wildcard()
        bn = is_op("relax.nn.batch_norm")(base, gamma, beta, mean, var)
        root = is_tuple_get_item(bn, 0)
        bindings = Bindings(func)

        def replace(expr, m):
            attrs = m[bn].attrs
            try:
                if bool(attrs.training):
                    raise _Decline("batch_norm in training mode")
                p = self._producer(m, prod, bias, base, bindings)
                if int(attrs.axis) % p.out_ndim != p.out_axis % p.out_ndim:
                    raise _Decline("batch_norm axis is not the channel axis")
                g, b, mu, v = (p.vector(const_value(m[k]), n) for k, n in
                               ((gamma, "gamma"), (beta, "beta"), (mean, "mean"), (var, "var")))
            except _Decline as why:
                self._decline(bindings.name(m[bn]), str(why))
                return expr
            self.stats.changed["batch_norm folded"] += 1
            return p.rebuild(*batch_norm_scale_shift(g, b, mu, v, np.float32(float(attrs.epsilon))))

        return rewrite_call(root, replace, func)

    def _fold_affine(self, func):
        prod, bias, base = _producer_pattern()
        k = is_const()
        root = None
        for op in _AFFINE:
            pat = is_op(op)(base, k)
            if op in _COMMUTATIVE:
                pat = pat | is_op(op)(k, base)
            root = pat if root is None else root | pat
        bindings = Bindings(func)

        def replace(expr, m):
            op = expr.op.name
            if op == "relax.add" and m[base].same_as(m[prod]):
                return expr  # add(conv, b) is the folded form itself
            try:
                p = self._producer(m, prod, bias, base, bindings)
                value = p.per_channel(const_value(m[k]), "constant")
                if op == "relax.divide" and np.any(value == 0):
                    raise _Decline("divisor has zeros")
            except _Decline as why:
                self._decline(bindings.name(expr), str(why))
                return expr
            one = np.ones(p.channels, p.weight.dtype)
            zero = np.zeros(p.channels, p.weight.dtype)
            scale, shift = {
                "relax.multiply": (value, zero),
                "relax.divide": (one / value, zero),
                "relax.add": (one, value),
                "relax.subtract": (one, -value),
            }[op]
            self.stats.changed["scale/shift folded"] += 1
            return p.rebuild(scale, shift)

        return rewrite_call(root, replace, func)


def fold_batch_norm_onnx(model: onnx.ModelProto) -> onnx.ModelProto:
    """The ONNX-level fold of the int8 flow: each BatchNormalization into the Conv (or
    ConvTranspose, groups 1) before it.

    Same math as :class:`FoldBatchNorm` (:func:`batch_norm_scale_shift`,
    :func:`fold_scale_shift`), in float64, rounded once to float32.
    Preconditions, else the pair is left as it is: the Conv's output feeds only the BN and
    is no graph output; the BN has one output; the weight, bias and BN parameters are
    initializers.

    Before::  c = Conv(x, W, b); y = BatchNormalization(c, g, beta, mean, var)
    After::   y = Conv(x, W', b')   (initializers ``<conv>__bn_w``, ``<conv>__bn_b``)

    A ConvTranspose's BN used to stay in the int8 graph, where the int8 weights keep it
    from folding later: PP-OCRv4 det's head ran it per element, sqrt and division
    included, in a 37 M-instruction kernel (arm64 proxy, rpi5 int8).

    Returns:
        A new model (the input is not modified); initializers no node reads are dropped.
    """
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    producer = {o: n for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}
    removed = set()
    for bn in graph.node:
        if bn.op_type != "BatchNormalization" or len(bn.output) != 1:
            continue
        conv = producer.get(bn.input[0])
        if (conv is None or conv.op_type not in ("Conv", "ConvTranspose") or consumers.get(bn.input[0]) != 1
                or bn.input[0] in outputs or conv.input[1] not in inits
                or not all(n in inits for n in bn.input[1:5])
                or (len(conv.input) > 2 and conv.input[2] not in inits)):
            continue
        # output channels: Conv weight [O, I/g, kh, kw] axis 0; ConvTranspose [I, O/g, kh, kw]
        # axis 1, groups 1 only (with groups its axis 1 holds O/g channels per group)
        axis = 1 if conv.op_type == "ConvTranspose" else 0
        group = next((helper.get_attribute_value(a) for a in conv.attribute if a.name == "group"), 1)
        if axis == 1 and group != 1:
            continue
        eps = next((helper.get_attribute_value(a) for a in bn.attribute if a.name == "epsilon"), 1e-5)
        g, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in bn.input[1:5])
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        b = (numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
             if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[axis]))
        w, b = fold_scale_shift(w, b, *batch_norm_scale_shift(g, beta, mean, var, eps), axis=axis)
        w_name, b_name = f"{conv.name or conv.output[0]}__bn_w", f"{conv.name or conv.output[0]}__bn_b"
        graph.initializer.extend([numpy_helper.from_array(w.astype(np.float32), w_name),
                                  numpy_helper.from_array(b.astype(np.float32), b_name)])
        del conv.input[1:]
        conv.input.extend([w_name, b_name])
        conv.output[0] = bn.output[0]
        removed.add(id(bn))
    set_graph_nodes(graph, [n for n in graph.node if id(n) not in removed])
    return out


def set_graph_nodes(graph: onnx.GraphProto, nodes: list) -> None:
    """Make ``nodes`` the ONNX graph's nodes and drop the initializers none of them reads."""
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
