"""ONNX-level rewrites of the int8 flow: prepare the fp32 graph, find its layers, insert QDQ.

:func:`prepare` turns the simplified fp32 model into the graph that is calibrated and
quantized: opset >= 13 (:func:`ensure_opset13`; per-channel DequantizeLinear needs it),
Constant nodes as initializers, BatchNormalization folded into the Conv before it
(:func:`lwc.passes.fold_batch_norm.fold_batch_norm_onnx`, lwc's one BN fold; its
docstring says why the int8 flow folds at the ONNX level), non-overlapping
ConvTransposes as 1x1 Conv + DepthToSpace (:func:`conv_transpose_to_conv`), every node
named. :func:`find_layers` lists the quantizable layers and :func:`insert_qdq` writes the
decisions as QuantizeLinear/DequantizeLinear pairs: activations per-tensor asymmetric
uint8, weights int8 per output channel, symmetric, narrow range [-127, 127]
(:func:`activation_qparams`, :func:`weight_qparams`). Every function returns a new model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from lwc.errors import LwcError
from lwc.passes.fold_batch_norm import set_graph_nodes

QUANT_OPS = ("Conv", "MatMul", "Gemm")


@dataclass(frozen=True)
class Layer:
    """A quantizable ONNX node."""

    name: str
    op: str
    activation: str  # input tensor quantized per-tensor
    weight: str  # initializer quantized per channel
    weight_axis: int  # output-channel axis of the weight
    output: str


def ensure_opset13(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model at default-domain opset >= 13 (per-channel DequantizeLinear needs it)."""
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=13)
    if opset >= 13:
        return model
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, 13)
    except Exception as err:
        raise LwcError(f"cannot convert the model from opset {opset} to 13 for int8: {err}") from None


def constants_to_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant nodes holding a tensor become initializers (weights are then found by name)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = []
    for node in out.graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and "value" in attrs:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(attrs["value"].t)
            tensor.name = node.output[0]
            out.graph.initializer.append(tensor)
        else:
            keep.append(node)
    del out.graph.node[:]
    out.graph.node.extend(keep)
    return out

def conv_transpose_to_conv(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite each non-overlapping ConvTranspose (kernel == stride) as a 1x1 Conv and a
    DepthToSpace, so it is quantized and runs on the int8 conv kernels instead of in fp32.

    With kernel == stride == s (square), no padding, dilation 1, group 1, no
    output_padding / output_shape, every output pixel ``(s*i + a, s*j + b)`` of the
    ConvTranspose is the input pixel ``(i, j)`` times the weights of tap ``(a, b)`` alone
    (ONNX ConvTranspose: the kernel footprints do not overlap), i.e.::

        y[o, s*i + a, s*j + b] = bias[o] + sum_c x[c, i, j] * W[c, o, a, b]
        = DepthToSpace_CRD(Conv1x1(x, W'), s),  W'[(o*s + a)*s + b, c] = W[c, o, a, b]

    (ONNX DepthToSpace, mode CRD: channel ``o*s*s + a*s + b`` goes to ``(o, a, b)``), the
    bias repeated s*s times. Exact up to fp32 summation order. PP-OCRv4 det's two
    upsampling ConvTransposes (2x2, stride 2) were its only fp32 convs in the int8 graph
    (about 3.4 ms of 21 ms on a Zen 5). Others are left as they are (and stay fp32).

    Args:
        model: opset >= 13 model with the weights as initializers.
    Returns:
        A new model (the input is not modified).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = inits.get(node.input[1]) if node.op_type == "ConvTranspose" and len(node.input) > 1 else None
        kernel = list(attrs.get("kernel_shape", list(weight.dims[2:]) if weight is not None else []))
        if (weight is None or len(weight.dims) != 4 or list(weight.dims[2:]) != kernel
                or len(set(kernel)) != 1 or list(attrs.get("strides", [1, 1])) != kernel
                or any(attrs.get("pads", [0])) or any(d != 1 for d in attrs.get("dilations", [1]))
                or attrs.get("group", 1) != 1 or any(attrs.get("output_padding", [0]))
                or "output_shape" in attrs or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
                or (len(node.input) > 2 and node.input[2] and node.input[2] not in inits)):
            nodes.append(node)
            continue
        s = kernel[0]
        w = numpy_helper.to_array(weight)  # [C, O, s, s]
        c_in, c_out = w.shape[:2]
        name = node.name or node.output[0]
        w1 = np.ascontiguousarray(w.transpose(1, 2, 3, 0).reshape(c_out * s * s, c_in, 1, 1))
        conv_inputs = [node.input[0], f"{name}__conv_w"]
        graph.initializer.append(numpy_helper.from_array(w1.astype(np.float32), conv_inputs[1]))
        if len(node.input) > 2 and node.input[2]:
            bias = np.repeat(numpy_helper.to_array(inits[node.input[2]]).astype(np.float32), s * s)
            conv_inputs.append(f"{name}__conv_b")
            graph.initializer.append(numpy_helper.from_array(bias, conv_inputs[2]))
        nodes.append(helper.make_node("Conv", conv_inputs, [f"{name}__conv_out"], name=f"{name}__conv",
                                      kernel_shape=[1, 1]))
        nodes.append(helper.make_node("DepthToSpace", [f"{name}__conv_out"], list(node.output),
                                      name=f"{name}__depth_to_space", blocksize=s, mode="CRD"))
    set_graph_nodes(graph, nodes)
    return out


def _node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    return model


def find_layers(model: onnx.ModelProto) -> list[Layer]:
    """The Conv/MatMul/Gemm nodes with constant weights, in graph order."""
    inits = {t.name: t for t in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        if node.op_type not in QUANT_OPS or len(node.input) < 2 or node.input[1] not in inits:
            continue
        w = inits[node.input[1]]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv" and len(w.dims) == 4:
            axis = 0
        elif node.op_type == "MatMul" and len(w.dims) == 2:
            axis = 1
        elif node.op_type == "Gemm" and attrs.get("alpha", 1.0) == 1.0 and not attrs.get("transA", 0):
            axis = 0 if attrs.get("transB", 0) else 1
        else:
            continue
        if w.data_type != onnx.TensorProto.FLOAT:
            continue
        layers.append(Layer(node.name, node.op_type, node.input[0], node.input[1], axis, node.output[0]))
    return layers

def activation_qparams(lo: float, hi: float) -> tuple[np.float32, np.uint8]:
    """uint8 asymmetric scale and zero point for the range [lo, hi] (0 kept exact)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-12:
        return np.float32(1.0), np.uint8(0)
    scale = np.float32((hi - lo) / 255.0)
    zp = int(np.clip(np.round(-lo / scale), 0, 255))
    return scale, np.uint8(zp)


def weight_qparams(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel symmetric int8 (narrow range): (int8 weights, float32 scales)."""
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    amax = np.abs(moved).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


#: ops whose float inputs read a quantized activation's DequantizeLinear output, as
#: onnxruntime's QDQ quantizer writes residual adds: the producer then writes uint8 only
#: (one fused kernel) instead of float plus a separate quantize kernel
SHARE_DQ_OPS = ("Add",)


def insert_qdq(model: onnx.ModelProto, layers: list[Layer], ranges: dict[str, tuple[float, float]],
               exclude: set[str] = frozenset()) -> onnx.ModelProto:
    """A copy of ``model`` with QuantizeLinear/DequantizeLinear on the layers' inputs.

    A quantized activation that also feeds an op of :data:`SHARE_DQ_OPS` (a residual
    Add) feeds it through the same DequantizeLinear, as in onnxruntime's QDQ format.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    chosen = [layer for layer in layers if layer.name not in exclude]
    by_node = {layer.name: layer for layer in chosen}
    acts = {layer.activation for layer in chosen}
    new_inits, weight_nodes, act_done, weight_done = [], [], {}, {}
    nodes = []

    def dequantized(base: str) -> str:
        if base not in act_done:
            scale, zp = activation_qparams(*ranges[base])
            s, z = f"{base}__scale", f"{base}__zp"
            new_inits.extend([numpy_helper.from_array(np.array(scale, np.float32), s),
                              numpy_helper.from_array(np.array(zp, np.uint8), z)])
            nodes.append(helper.make_node("QuantizeLinear", [base, s, z], [f"{base}__q"],
                                          name=f"{base}__quantize"))
            nodes.append(helper.make_node("DequantizeLinear", [f"{base}__q", s, z], [f"{base}__dq"],
                                          name=f"{base}__dequantize"))
            act_done[base] = f"{base}__dq"
        return act_done[base]

    for node in graph.node:
        layer = by_node.get(node.name)
        if layer is not None:
            if layer.weight not in weight_done:
                w = numpy_helper.to_array(inits[layer.weight])
                q, scale = weight_qparams(w, layer.weight_axis)
                base = layer.weight
                new_inits += [numpy_helper.from_array(q, f"{base}__q"),
                              numpy_helper.from_array(scale, f"{base}__scale"),
                              numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{base}__zp")]
                weight_nodes.append(helper.make_node(
                    "DequantizeLinear", [f"{base}__q", f"{base}__scale", f"{base}__zp"], [f"{base}__dq"],
                    name=f"{base}__dequantize", axis=layer.weight_axis))
                weight_done[layer.weight] = f"{base}__dq"
            node.input[0] = dequantized(layer.activation)
            node.input[1] = weight_done[layer.weight]
        elif node.op_type in SHARE_DQ_OPS:
            for i, name in enumerate(node.input):
                if name in acts:
                    node.input[i] = dequantized(name)
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(weight_nodes + nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    return out


def has_qdq(model: onnx.ModelProto) -> bool:
    """Whether the model is already quantized (has QuantizeLinear/DequantizeLinear)."""
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def prepare(model: onnx.ModelProto) -> onnx.ModelProto:
    """The fp32 graph that is calibrated and quantized (see the module docstring)."""
    from lwc.passes.fold_batch_norm import fold_batch_norm_onnx

    return _node_names(conv_transpose_to_conv(fold_batch_norm_onnx(constants_to_initializers(ensure_opset13(model)))))
