"""int8 post-training quantization.

Flow (data one way; :func:`import_quantized` runs steps 1-6 inside
:func:`lwc.frontend.import_model`, the driver runs step 7 after lwc's fp32 passes):

1. The fp32 model is loaded, shape-fixed and simplified by :mod:`lwc.frontend`, then
   prepared at the ONNX level (:func:`lwc.quantize.rewrite.prepare`): opset 13 if older
   (per-channel DequantizeLinear needs 13), BatchNorm folded into Conv so the weights
   quantized are the final ones (:func:`lwc.passes.fold_batch_norm.fold_batch_norm_onnx`,
   lwc's one BN fold, whose docstring says why int8 folds at the ONNX level), and a
   ConvTranspose whose kernel equals its stride as a 1x1 Conv and a DepthToSpace
   (:func:`conv_transpose_to_conv`), so it is quantized too.
2. :func:`lwc.quantize.rewrite.find_layers` lists the layers to quantize: Conv (all
   groups, so depthwise too) with constant 4-D weights, MatMul with a constant 2-D
   weight, Gemm (alpha 1) with a constant weight.
3. :mod:`lwc.calibrate` observes the ranges of every layer input on the samples.
4. :func:`lwc.quantize.rewrite.insert_qdq` writes the decisions into the ONNX graph as
   QuantizeLinear / DequantizeLinear pairs: activations per-tensor asymmetric uint8 (the
   x86 VNNI operand order u8 x s8; ARM's sdot/udot take it after the zero-point
   correction), weights int8 per output channel, symmetric, narrow range [-127, 127].
   This is the same QDQ form onnxruntime's ``quantize_static`` writes, so our own models
   and pre-quantized ones take one path from here on, and onnxruntime can run the
   quantized model as a reference for every layer.
5. :func:`lwc.quantize.metrics.layer_report` compares every quantized layer's output with
   the fp32 model on the samples (SQNR in dB, cosine) and each model output (cosine,
   top-1 agreement).
6. With ``max_accuracy_drop``, :func:`lwc.quantize.flow.fallback` keeps the most
   sensitive layers in fp32 (sensitivity = final-output drop with only that layer
   quantized) until the bound holds, the idea of NNCF's accuracy-aware quantization.
7. TVM imports the QDQ model as ``relax.quantize``/``relax.dequantize``, and
   :func:`lower_qdq` (:mod:`lwc.quantize.lowering`) turns dequantize -> conv2d/matmul
   [-> quantize] into int8 x int8 -> int32 kernels with fixed-point requantization;
   :func:`describe` writes the manifest's ``quantization`` section.

Modules: :mod:`~lwc.quantize.options` (:class:`QuantizeOptions`),
:mod:`~lwc.quantize.rewrite` (ONNX-level rewrites and QDQ insertion),
:mod:`~lwc.quantize.metrics` (SQNR/cosine, ``lwc verify``), :mod:`~lwc.quantize.flow`
(the entry points), :mod:`~lwc.quantize.report` (report and manifest section),
:mod:`~lwc.quantize.lowering` (the Relax lowering stage). Calibration is
:mod:`lwc.calibrate`.
"""

from lwc.quantize.flow import fallback, import_quantized, quantize_onnx
from lwc.quantize.lowering import LOWERING_PASS_NAMES, lower_qdq, lowering_passes
from lwc.quantize.metrics import cosine, layer_report, sqnr_db, top1_agreement, verify_samples
from lwc.quantize.options import DEFAULT_METHOD, QuantizeOptions
from lwc.quantize.report import QuantizationReport, describe, format_report, speed_notes
from lwc.quantize.rewrite import conv_transpose_to_conv, find_layers, has_qdq, insert_qdq

__all__ = [
    "DEFAULT_METHOD",
    "LOWERING_PASS_NAMES",
    "QuantizationReport",
    "QuantizeOptions",
    "conv_transpose_to_conv",
    "cosine",
    "describe",
    "fallback",
    "find_layers",
    "format_report",
    "has_qdq",
    "import_quantized",
    "insert_qdq",
    "layer_report",
    "lower_qdq",
    "lowering_passes",
    "quantize_onnx",
    "speed_notes",
    "sqnr_db",
    "top1_agreement",
    "verify_samples",
]
