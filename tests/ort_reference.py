"""onnxruntime as the numerical reference for quantized (QDQ) models.

onnxruntime runs a QDQ graph in one of two ways:

* optimized (a default session): each QDQ node unit becomes QLinearConv / QGemm / ... on
  MLAS's integer kernels. On x86 CPUs without VNNI, MLAS's uint8 x int8 kernels use
  ``vpmaddubsw``, whose int16 pair sums saturate (255 * 127 * 2 > 32767): results can be
  off by many steps (measured on Zen 3, onnxruntime 1.32: 12.75, the whole uint8 output
  range of a grouped conv with scale 0.05). onnxruntime's quantization guide recommends
  ``reduce_range`` (7-bit weights) on such CPUs for this reason. With VNNI
  (``vpdpbusd``, 32-bit accumulation) and on Arm the kernels are exact.
* unoptimized (``ORT_DISABLE_ALL``): QuantizeLinear / DequantizeLinear / fp32 ops one by
  one, the ONNX spec's definition of the graph. This is the reference on every CPU.
"""

from __future__ import annotations

import platform

import numpy as np
import onnx


def run(model, feed: dict, fused: bool = False) -> list[np.ndarray]:
    """Outputs of ``model`` (ModelProto, bytes or path) on ``feed``.

    Args:
        fused: True runs onnxruntime's int8 kernels (default graph optimizations); False
            (default) the QDQ graph op by op, as the ONNX spec defines it.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not fused:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    data = str(data) if not isinstance(data, bytes) else data
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"]).run(None, feed)


def fused_int8_is_exact() -> bool:
    """Whether onnxruntime's integer kernels compute exact int32 sums on this CPU (see above)."""
    from lwc.targets import host_features

    if platform.machine().lower() in ("aarch64", "arm64"):
        return True
    return "vnni" in host_features()
