"""int8 post-training quantization: the driver of the flow.

Flow (data one way; :func:`import_quantized` runs it):

1. The fp32 model is loaded, shape-fixed and simplified by :mod:`lwc.frontend` (BatchNorm
   is folded into Conv there, so the weights quantized are the final ones), and
   converted to opset 13 if older (per-channel DequantizeLinear needs 13).
   A ConvTranspose whose kernel equals its stride becomes a 1x1 Conv and a DepthToSpace
   (:func:`conv_transpose_to_conv`), so it is quantized too.
2. :func:`find_layers` lists the layers to quantize: Conv (all groups, so depthwise too)
   with constant 4-D weights, MatMul with a constant 2-D weight, Gemm (alpha 1) with a
   constant weight.
3. :mod:`lwc.calibrate` observes the ranges of every layer input on the samples.
4. :func:`insert_qdq` writes the decisions into the ONNX graph as QuantizeLinear /
   DequantizeLinear pairs: activations per-tensor asymmetric uint8 (the x86 VNNI operand
   order u8 x s8; ARM's sdot/udot take it after the zero-point correction), weights int8
   per output channel, symmetric, narrow range [-127, 127]. This is the same QDQ form
   onnxruntime's ``quantize_static`` writes, so our own models and pre-quantized ones
   take one path from here on, and onnxruntime can run the quantized model as a
   reference for every layer.
5. :func:`layer_report` compares every quantized layer's output with the fp32 model on
   the samples (SQNR in dB, cosine) and each model output (cosine, top-1 agreement).
6. With ``max_accuracy_drop``, :func:`fallback` keeps the most sensitive layers in fp32
   (sensitivity = final-output drop with only that layer quantized) until the bound holds,
   the idea of NNCF's accuracy-aware quantization.
7. TVM imports the QDQ model as ``relax.quantize``/``relax.dequantize``, and the lowering
   passes (:func:`lowering_passes`) turn dequantize -> conv2d/matmul [-> quantize] into
   int8 x int8 -> int32 kernels with fixed-point requantization.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from lwc import calibrate
from lwc.errors import LwcError

QUANT_OPS = ("Conv", "MatMul", "Gemm")
DEFAULT_METHOD = "percentile:99.99"
REPORT_SAMPLES = 32


@dataclass
class QuantizeOptions:
    """Options of ``--quantize int8``.

    Attributes:
        calib: folder of calibration samples (:func:`lwc.calibrate.load_samples`).
        calib_random: N random samples instead (warns loudly).
        method: ``minmax``, ``percentile:P`` or ``entropy``.
        max_accuracy_drop: bound on 1 - cosine(fp32, int8) of every output (mean over
            samples); layers fall back to fp32 until it holds. None: no fallback.
        metric: optional ``metric(fp32_outputs, int8_outputs) -> drop`` (lists over
            samples of lists of output arrays) replacing the cosine drop.
        exclude: ONNX node names to keep in fp32.
        max_samples: calibration samples used at most.
        preprocess: how image files become inputs.
        progress: show tqdm progress bars.
    """

    calib: str | Path | None = None
    calib_random: int | None = None
    method: str = DEFAULT_METHOD
    max_accuracy_drop: float | None = None
    metric: Callable | None = None
    exclude: tuple[str, ...] = ()
    max_samples: int = 256
    preprocess: calibrate.ImagePreprocess | None = None
    progress: bool = True

    def fingerprint(self) -> dict:
        """What decides the quantized graph, as JSON data (keys tuning logs).

        The calibration folder enters by the digest of its files
        (:func:`lwc.calibrate.folder_digest`), not by its path; ``progress`` is left out.
        A custom ``metric`` enters by its qualified name.
        """
        return {
            "calib": calibrate.folder_digest(self.calib) if self.calib is not None else None,
            "calib_random": self.calib_random,
            "method": str(calibrate.parse_method(self.method)),
            "max_accuracy_drop": self.max_accuracy_drop,
            "metric": None if self.metric is None else getattr(self.metric, "__qualname__", repr(self.metric)),
            "exclude": sorted(self.exclude),
            "max_samples": self.max_samples,
            "preprocess": (self.preprocess or calibrate.ImagePreprocess()).describe(),
        }


@dataclass(frozen=True)
class Layer:
    """A quantizable ONNX node."""

    name: str
    op: str
    activation: str  # input tensor quantized per-tensor
    weight: str  # initializer quantized per channel
    weight_axis: int  # output-channel axis of the weight
    output: str


@dataclass
class QuantizationReport:
    method: str
    samples: int
    source: str
    layers: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)
    lowering: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    max_accuracy_drop: float | None = None

    def to_json(self) -> dict:
        return dict(self.__dict__)

    def format(self, n: int = 5) -> str:
        return format_report(self.to_json(), n)


def format_report(info: dict, n: int = 5) -> str:
    """Human-readable summary of a manifest's ``quantization`` section: outputs, worst layers."""
    layers = info.get("layers", [])
    lines = []
    if layers:
        lines.append(f"int8: {info.get('samples')} calibration samples, {info.get('method')}; "
                     f"{sum(1 for layer in layers if layer['int8'])}/{len(layers)} layers int8")
    if info.get("fallback"):
        lines.append(f"kept in fp32 to meet the accuracy bound: {', '.join(info['fallback'])}")
    for o in info.get("outputs", []):
        agree = f", top-1 agreement {o['top1_agreement']:.1%}" if o.get("top1_agreement") is not None else ""
        lines.append(f"output {o['name']}: cosine vs fp32 {o['cosine']:.5f}{agree}")
    worst = sorted([x for x in layers if x["int8"]], key=lambda x: x["sqnr_db"])[:n]
    if worst:
        lines.append(f"worst layers (error vs fp32 accumulated up to the layer's output):")
        lines.append(f"  {'layer':<40} {'op':<7} {'SQNR dB':>8} {'cosine':>9}")
        for x in worst:
            lines.append(f"  {x['name'][:40]:<40} {x['op']:<7} {x['sqnr_db']:>8.2f} {x['cosine']:>9.5f}")
    low = info.get("lowering", {})
    if low:
        lines.append(f"integer kernels: {low.get('int8_conv2d', 0)} conv2d, {low.get('int8_matmul', 0)} matmul; "
                     f"{low.get('FuseRequantize', 0)} fixed-point requantizations")
    return "\n".join(lines)


# --------------------------------------------------------------------------- graph


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


def fold_batch_norm(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold BatchNormalization into the Conv before it (weights must be final before
    they are quantized): W' = W * g / sqrt(v + eps), b' = (b - m) * g / sqrt(v + eps) + beta
    (per output channel; g, beta, m, v the BN's scale, bias, mean, variance).
    Applies when the Conv's output feeds only the BN and all parameters are initializers."""
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
        if (conv is None or conv.op_type != "Conv" or consumers.get(bn.input[0]) != 1
                or bn.input[0] in outputs or conv.input[1] not in inits
                or not all(n in inits for n in bn.input[1:5])
                or (len(conv.input) > 2 and conv.input[2] not in inits)):
            continue
        eps = next((helper.get_attribute_value(a) for a in bn.attribute if a.name == "epsilon"), 1e-5)
        g, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in bn.input[1:5])
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        b = (numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
             if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[0]))
        factor = g / np.sqrt(var + eps)
        w_name, b_name = f"{conv.name or conv.output[0]}__bn_w", f"{conv.name or conv.output[0]}__bn_b"
        graph.initializer.extend([
            numpy_helper.from_array((w * factor.reshape(-1, 1, 1, 1)).astype(np.float32), w_name),
            numpy_helper.from_array(((b - mean) * factor + beta).astype(np.float32), b_name)])
        del conv.input[1:]
        conv.input.extend([w_name, b_name])
        conv.output[0] = bn.output[0]
        removed.add(id(bn))
    _set_nodes(graph, [n for n in graph.node if id(n) not in removed])
    return out


def _set_nodes(graph: onnx.GraphProto, nodes: list) -> None:
    """Make ``nodes`` the graph's nodes and drop the initializers none of them reads."""
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


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
    _set_nodes(graph, nodes)
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


def insert_qdq(model: onnx.ModelProto, layers: list[Layer], ranges: dict[str, tuple[float, float]],
               exclude: set[str] = frozenset()) -> onnx.ModelProto:
    """A copy of ``model`` with QuantizeLinear/DequantizeLinear on the layers' inputs."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    chosen = [layer for layer in layers if layer.name not in exclude]
    by_node = {layer.name: layer for layer in chosen}
    new_inits, weight_nodes, act_done, weight_done = [], [], {}, {}
    nodes = []
    for node in graph.node:
        layer = by_node.get(node.name)
        if layer is not None:
            if layer.activation not in act_done:
                scale, zp = activation_qparams(*ranges[layer.activation])
                base = layer.activation
                new_inits += [numpy_helper.from_array(np.array(scale, np.float32), f"{base}__scale"),
                              numpy_helper.from_array(np.array(zp, np.uint8), f"{base}__zp")]
                nodes.append(helper.make_node("QuantizeLinear", [base, f"{base}__scale", f"{base}__zp"],
                                              [f"{base}__q"], name=f"{base}__quantize"))
                nodes.append(helper.make_node("DequantizeLinear", [f"{base}__q", f"{base}__scale", f"{base}__zp"],
                                              [f"{base}__dq"], name=f"{base}__dequantize"))
                act_done[layer.activation] = f"{base}__dq"
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
            node.input[0] = act_done[layer.activation]
            node.input[1] = weight_done[layer.weight]
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(weight_nodes + nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    return out


# --------------------------------------------------------------------------- measuring


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """10 log10(|ref|^2 / |ref - test|^2) in dB (capped at 100)."""
    ref, test = ref.astype(np.float64).ravel(), test.astype(np.float64).ravel()
    noise = float(np.sum((ref - test) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0:
        return 100.0
    return float(min(100.0, 10 * np.log10(max(signal, 1e-30) / noise)))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(np.dot(a, b) / norm) if norm > 0 else float(np.array_equal(a, b))


def top1_agreement(refs: list[np.ndarray], tests: list[np.ndarray]) -> float | None:
    """Share of samples (rows) whose argmax over the last axis agrees; None if not a classifier output.

    Classifier outputs are ``[N, classes]`` or ``[N, T, classes]`` (CTC, per time step);
    rank-4+ outputs are maps (NCHW, e.g. a DBNet probability map) and get None.
    """
    if refs[0].ndim not in (2, 3) or refs[0].shape[-1] < 2:
        return None
    r = np.concatenate([x.reshape(-1, x.shape[-1]) for x in refs]).argmax(-1)
    t = np.concatenate([x.reshape(-1, x.shape[-1]) for x in tests]).argmax(-1)
    return float(np.mean(r == t))


def _run(model: onnx.ModelProto, samples: list[dict], names: list[str]) -> list[list[np.ndarray]]:
    return [[values[n] for n in names] for values in calibrate.run_with_intermediates(model, samples, names)]


def output_drop(fp32_out, q_out, metric: Callable | None = None) -> float:
    """Accuracy drop: ``metric`` or the worst output's 1 - mean cosine over samples."""
    if metric is not None:
        return float(metric(fp32_out, q_out))
    drops = []
    for j in range(len(fp32_out[0])):
        drops.append(1.0 - float(np.mean([cosine(r[j], t[j]) for r, t in zip(fp32_out, q_out)])))
    return max(drops)


def layer_report(fp32: onnx.ModelProto, qdq: onnx.ModelProto, layers: list[Layer],
                 samples: list[dict], excluded: set[str]) -> tuple[list[dict], list[dict]]:
    """Per-layer SQNR/cosine and per-output cosine/top-1 of the QDQ model vs fp32."""
    outputs = [o.name for o in fp32.graph.output]
    names = outputs + [layer.output for layer in layers if layer.output not in outputs]
    ref = _run(fp32, samples, names)
    got = _run(qdq, samples, names)
    col = {n: i for i, n in enumerate(names)}
    rows = []
    for layer in layers:
        i = col[layer.output]
        r = np.concatenate([s[i].ravel() for s in ref])
        t = np.concatenate([s[i].ravel() for s in got])
        rows.append({"name": layer.name, "op": layer.op, "int8": layer.name not in excluded,
                     "sqnr_db": round(sqnr_db(r, t), 2), "cosine": round(cosine(r, t), 6)})
    outs = []
    for n in outputs:
        i = col[n]
        cos = [cosine(a[i], b[i]) for a, b in zip(ref, got)]
        outs.append({"name": n, "cosine": round(float(np.mean(cos)), 6), "cosine_min": round(float(np.min(cos)), 6),
                     "top1_agreement": top1_agreement([a[i] for a in ref], [b[i] for b in got])})
    return rows, outs


def fallback(fp32: onnx.ModelProto, layers: list[Layer], ranges: dict, samples: list[dict],
             bound: float, metric: Callable | None, exclude: set[str], log=None) -> tuple[set[str], float]:
    """Layers to keep in fp32 so that the output drop is <= ``bound``, and the drop reached.

    Sensitivity of a layer = the drop with only that layer quantized; the most sensitive
    go back to fp32 first, one at a time, until the bound holds.
    """
    outputs = [o.name for o in fp32.graph.output]
    ref = _run(fp32, samples, outputs)

    def drop(excluded: set[str]) -> float:
        return output_drop(ref, _run(insert_qdq(fp32, layers, ranges, excluded), samples, outputs), metric)

    current = drop(exclude)
    if current <= bound:
        return set(exclude), current
    names = [layer.name for layer in layers if layer.name not in exclude]
    sensitivity = {n: drop(set(names) - {n} | exclude) for n in names}
    excluded = set(exclude)
    for n in sorted(names, key=lambda n: -sensitivity[n]):
        excluded.add(n)
        current = drop(excluded)
        if log:
            log(f"lwc: accuracy fallback: {n} -> fp32 (sensitivity {sensitivity[n]:.2e}); drop now {current:.2e}")
        if current <= bound:
            break
    return excluded, current


# --------------------------------------------------------------------------- the flow


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def calibration_samples(inputs: list, options: QuantizeOptions) -> tuple[list[dict], str]:
    if options.calib is not None and options.calib_random:
        raise LwcError("give either --calib DIR or --calib-random N, not both")
    if options.calib is not None:
        samples = calibrate.load_samples(options.calib, inputs, options.preprocess, options.max_samples)
        return samples, f"{options.calib}"
    if options.calib_random:
        return calibrate.random_samples(inputs, options.calib_random), f"random N(0,1) x{options.calib_random}"
    raise LwcError("--quantize int8 needs calibration data: --calib DIR (.npy/.npz/images) "
                   "or --calib-random N (poor accuracy)")


def quantize_onnx(model: onnx.ModelProto, inputs: list, options: QuantizeOptions,
                  log=_log) -> tuple[onnx.ModelProto, QuantizationReport]:
    """Calibrate and insert QDQ into a simplified fp32 model with static shapes."""
    method = calibrate.parse_method(options.method)
    samples, source = calibration_samples(inputs, options)
    model = _node_names(conv_transpose_to_conv(fold_batch_norm(constants_to_initializers(ensure_opset13(model)))))
    layers = find_layers(model)
    if not layers:
        raise LwcError("--quantize int8: the model has no Conv/MatMul/Gemm with constant weights")
    unknown = set(options.exclude) - {layer.name for layer in layers}
    if unknown:
        raise LwcError(f"exclude names no quantizable layer: {', '.join(sorted(unknown))}")
    acts = sorted({layer.activation for layer in layers})
    ranges = calibrate.observe(model, samples, acts, method, progress=options.progress)
    excluded = set(options.exclude)
    report = QuantizationReport(str(method), len(samples), source, max_accuracy_drop=options.max_accuracy_drop)
    eval_samples = samples[:REPORT_SAMPLES]
    if options.max_accuracy_drop is not None:
        excluded, reached = fallback(model, layers, ranges, eval_samples, options.max_accuracy_drop,
                                     options.metric, excluded, log if options.progress else None)
        report.fallback = sorted(excluded - set(options.exclude))
        if reached > options.max_accuracy_drop:
            report.notes.append(f"accuracy bound {options.max_accuracy_drop:g} not reached even with "
                                f"all layers in fp32 (drop {reached:.3g})")
    qdq = insert_qdq(model, layers, ranges, excluded)
    report.layers, report.outputs = layer_report(model, qdq, layers, eval_samples, excluded)
    for row in report.layers:
        row["input_range"] = [round(v, 6) for v in ranges[next(x.activation for x in layers if x.name == row["name"])]]
    return qdq, report


def has_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def import_quantized(model, input_shapes: dict | None, options: QuantizeOptions | None):
    """Like :func:`lwc.frontend.import_model`, with int8 quantization in between.

    Returns:
        (ImportedModel whose ``mod`` holds relax.quantize/dequantize, QuantizationReport).
    """
    import hashlib

    from lwc import frontend

    if isinstance(model, onnx.ModelProto):
        source, proto = None, model
        frontend.check_model(proto)
        sha = hashlib.sha256(proto.SerializeToString()).hexdigest()
    else:
        source = Path(model)
        proto = frontend.load_onnx(source)
        sha = frontend.model_sha256(source)
    if has_qdq(proto):
        raise LwcError("the model is already quantized (it has QuantizeLinear/DequantizeLinear); "
                       "compile it without --quantize")
    inputs = frontend.resolve_input_shapes(proto, input_shapes)
    frontend.check_supported(proto)
    simplified, notes = frontend.simplify(proto, inputs)
    qdq, report = quantize_onnx(simplified, inputs, options)
    mod = frontend.to_relax(qdq, inputs)
    outputs = frontend._relax_outputs(mod, frontend.graph_outputs(qdq))
    return frontend.ImportedModel(source, sha, qdq, inputs, outputs, mod, notes), report


# --------------------------------------------------------------------------- lowering


def lowering_passes(preset=None) -> list:
    """The Relax passes that put QDQ graphs on integer kernels, in order (fresh instances).

    With a CPU ``preset``, Int8DepthwiseConv2d puts the depthwise convs on lwc's
    vectorized kernel that pads with the zero point itself; where the CPU has an int8
    dot-product instruction MetaSchedule can tensorize to (x86 VNNI, Arm dotprod, and
    lwc's AVX2 ``vpmaddwd``), PackInt8Conv2d then rewrites the dense integer convs into
    kernels shaped for it.
    """
    from lwc.passes.fuse_requantize import FuseRequantize
    from lwc.passes.int8_depthwise_conv2d import Int8DepthwiseConv2d
    from lwc.passes.lower_qdq_conv2d import LowerQdqConv2d
    from lwc.passes.lower_qdq_matmul import LowerQdqMatmul
    from lwc.passes.pack_int8_conv2d import PackInt8Conv2d, dot_product_for

    passes = [LowerQdqConv2d(), LowerQdqMatmul(), FuseRequantize()]
    cpu = preset is not None and not preset.is_gpu
    if cpu:
        passes.append(Int8DepthwiseConv2d())
    dot = dot_product_for(preset.arch, preset.features) if cpu else None
    if dot is not None:
        passes.append(PackInt8Conv2d(dot))
    return passes


LOWERING_PASS_NAMES = ("LowerQdqConv2d", "LowerQdqMatmul", "FuseRequantize", "Int8DepthwiseConv2d",
                       "PackInt8Conv2d")


def lower_qdq(mod, disabled: tuple[str, ...] = (), preset=None) -> tuple[object, list[str], dict]:
    """Run the lowering passes if ``mod`` has dequantize ops.

    Args:
        disabled: pass names to skip (``--disable-pass``).
        preset: the target preset; decides whether dense int8 convs are packed for the
            CPU's dot-product instruction (:func:`lowering_passes`).
    Returns:
        (module, names of passes applied, summary: ops lowered/fused and the declines
        with their reasons).
    """
    from lwc.passes._qdq import count_ops

    if count_ops(mod, "relax.dequantize") == 0:
        return mod, [], {}
    applied, summary, declined = [], {}, []
    for p in lowering_passes(preset):
        name = p.info.name
        if name in disabled:
            continue
        mod = p(mod)
        applied.append(name)
        summary[name] = getattr(p, "lowered", getattr(p, "fused", 0))
        declined += [{"pass": name, "op": op, "reason": reason} for op, reason in p.declined]
    summary["int8_conv2d"] = (_count_int(mod, "relax.nn.conv2d") + summary.get("PackInt8Conv2d", 0)
                              + summary.get("Int8DepthwiseConv2d", 0))
    summary["int8_matmul"] = _count_int(mod, "relax.matmul")
    summary["fp32_conv2d"] = _count_ops_dtype(mod, "relax.nn.conv2d", "float32")
    summary["fp32_matmul"] = _count_ops_dtype(mod, "relax.matmul", "float32")
    summary["declined"] = declined
    return mod, applied, summary


def _count_ops_dtype(mod, name: str, dtype: str) -> int:
    from tvm import relax

    count = 0

    def visit(e):
        nonlocal count
        if isinstance(e, relax.Call) and getattr(e.op, "name", "") == name and str(e.args[0].ty.dtype) == dtype:
            count += 1

    for _, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return count


def _count_int(mod, name: str) -> int:
    return _count_ops_dtype(mod, name, "uint8") + _count_ops_dtype(mod, name, "int8")


def speed_notes(preset) -> list[str]:
    """Why int8 may not beat fp32 on ``preset`` (empty where lwc uses a 4-byte dot product).

    lwc's fast int8 path (:mod:`lwc.passes.pack_int8_conv2d`) tensorizes the dense convs
    with the CPU's int8 dot product: x86 VNNI (AVX512-VNNI or AVX-VNNI) or Arm dotprod
    (ARMv8.2+, e.g. Cortex-A76/A78), 4 byte products per 32-bit lane. x86 with only AVX2
    gets lwc's exact 16-bit ``vpmaddwd`` intrinsic instead: 2 products per lane, about
    1.4x an fp32 FMA kernel's rate (lwc.passes._dot_intrin), which the activation copy, the
    requantize epilogue and the depthwise convs (lwc's own kernel, no dot product) can eat up: measured with
    tuning on a Zen 3, int8 took 0.56x (resnet50), 0.83x (PP-OCRv4 det) and 1.26x
    (PP-OCR cls, mostly depthwise) the fp32 latency (docs/int8.md). With VNNI the notes
    are empty, yet int8 is not always faster there either: tuned on a Zen 5, 0.33x
    (resnet50), 0.43x (det) and 1.22x (cls: small layers, depthwise convs, which no dot
    product helps, and many sub-10 us kernels). Elsewhere (the
    Cortex-A72 of a Raspberry Pi 4, the A57 of Jetson Nano/TX2, pre-AVX2 x86) the int8
    convs run as TOPI's generic kernels, which cast to int32 before multiplying: measured
    with tuning on a Zen 3 before the AVX2 kernel existed, int8 took 1.17x (det) to 1.76x
    (resnet50) the fp32 latency (docs/int8.md).
    """
    from lwc.passes.pack_int8_conv2d import AVX2, dot_product_for

    dot = None if preset.is_gpu else dot_product_for(preset.arch, preset.features)
    if preset.is_gpu or (dot is not None and dot != AVX2):
        return []
    if dot == AVX2:
        return [f"{preset.name} ({preset.cpu}) has no VNNI: dense int8 convs run on 16-bit "
                "vpmaddwd (2 products per lane, VNNI does 4) and int8 may be slower than fp32 "
                "on this CPU (measure with `lwc bench`)"]
    arm = preset.arch in ("aarch64", "arm64")
    missing = "has no dotprod" if arm else "has neither VNNI nor AVX2"
    return [f"{preset.name} ({preset.cpu}) {missing}: int8 kernels widen before multiplying "
            "and may be slower than fp32 on this CPU (measure with `lwc bench`)"]


def describe(report: QuantizationReport | None, lowering: dict, preset) -> dict:
    """The manifest's ``quantization`` section ({} for an fp32 model), with notes."""
    if report is None and not lowering:
        return {}
    info = {"scheme": "activations uint8 per-tensor asymmetric, weights int8 per-channel symmetric",
            "requantize": "fixed-point int32 multiplier, int64 product, one rounding (ties toward +inf)"}
    if report is not None:
        info.update(report.to_json())
    else:
        info["source"] = "pre-quantized QDQ model"
    info["lowering"] = lowering
    notes = list(info.pop("notes", []))
    notes += speed_notes(preset)
    if lowering.get("fp32_conv2d") or lowering.get("fp32_matmul"):
        notes.append(f"{lowering.get('fp32_conv2d', 0)} conv2d and {lowering.get('fp32_matmul', 0)} "
                     "matmul stay fp32")
    declined = lowering.get("declined", [])
    # PackInt8Conv2d's and Int8DepthwiseConv2d's declines stay int8 (on TOPI's conv2d)
    for d in [d for d in declined if d["pass"] not in ("PackInt8Conv2d", "Int8DepthwiseConv2d")][:5]:
        notes.append(f"{d['pass']}: {d['op']} not lowered to int8: {d['reason']}")
    packed, unpacked = lowering.get("PackInt8Conv2d"), [d for d in declined if d["pass"] == "PackInt8Conv2d"]
    depthwise = lowering.get("Int8DepthwiseConv2d", 0)
    if packed is not None:
        reasons = sorted({d["reason"].split(" (")[0].split("=")[0] for d in unpacked})
        left = max(0, lowering.get("int8_conv2d", packed) - packed - depthwise)
        notes.append(f"{packed} int8 conv2d on the CPU's dot-product instruction (PackInt8Conv2d); "
                     f"{left} not" + (f" ({', '.join(reasons)})" if left and reasons else ""))
    if depthwise:
        notes.append(f"{depthwise} int8 depthwise conv2d on lwc's depthwise kernel (Int8DepthwiseConv2d)")
    info["notes"] = notes
    return info


# --------------------------------------------------------------------------- verify


def verify_samples(model_path, artifact_path, folder, min_cosine: float | None = None) -> dict:
    """Run an (int8) artifact and the fp32 model in onnxruntime on every sample of ``folder``.

    Per output: mean and min cosine over samples, max abs difference, top-1 agreement
    (outputs whose last axis holds classes). ``ok`` when every output's mean cosine is at
    least ``min_cosine`` (default: 1 - the artifact's max accuracy drop, else 0.99).
    """
    from lwc import artifact as art
    from lwc.frontend import TensorSpec, model_sha256
    from lwc.verify import onnxruntime_outputs

    artifact = art.load(artifact_path)
    specs = [TensorSpec(i["name"], tuple(i["shape"]), i["dtype"]) for i in artifact.manifest["inputs"]]
    samples = calibrate.load_samples(folder, specs)
    quant = artifact.manifest.get("quantization", {})
    if min_cosine is None:
        drop = quant.get("max_accuracy_drop")
        min_cosine = 1.0 - drop if drop is not None else 0.99
    warnings = []
    recorded = artifact.manifest.get("source_model", {}).get("sha256")
    if recorded and recorded != model_sha256(model_path):
        warnings.append(f"{model_path} is not the model {Path(artifact_path).name} was compiled from (sha256 differs)")
    if not quant:
        warnings.append("the artifact is not quantized; `lwc verify` without --inputs checks fp32 tolerances")
    got = [artifact.run(s) for s in samples]
    ref = [onnxruntime_outputs(model_path, s) for s in samples]
    outputs = []
    for j, spec in enumerate(artifact.outputs):
        cos = [cosine(r[j], g[j]) for r, g in zip(ref, got)]
        outputs.append({
            "name": spec["name"], "cosine_mean": float(np.mean(cos)), "cosine_min": float(np.min(cos)),
            "max_abs": float(max(np.abs(r[j].astype(np.float64) - g[j]).max() for r, g in zip(ref, got))),
            "top1_agreement": top1_agreement([r[j] for r in ref], [g[j] for g in got]),
            "ok": bool(np.mean(cos) >= min_cosine),
        })
    return {"ok": all(o["ok"] for o in outputs), "model": str(model_path), "artifact": str(artifact_path),
            "target": artifact.manifest["target"]["preset"], "samples": len(samples),
            "min_cosine": min_cosine, "outputs": outputs, "warnings": warnings}
