"""Small QDQ ONNX models for the int8 lowering tests (onnx.helper; seeded)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper
from onnx import numpy_helper as nh


def _qdq(name: str, scale: float, zp: int, dtype) -> tuple[list, list]:
    inits = [nh.from_array(np.array(scale, np.float32), f"{name}_s"), nh.from_array(np.array(zp, dtype), f"{name}_z")]
    nodes = [helper.make_node("QuantizeLinear", [name, f"{name}_s", f"{name}_z"], [f"{name}_q"]),
             helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"])]
    return inits, nodes


def conv_model(channels=8, groups=8, x_zp=128, x_dtype=np.uint8, stride=1, pads=1, relu=True,
               w_zp=0, hw=16, seed=0, k=3) -> onnx.ModelProto:
    """Case Q1 by default: uint8 input (scale 0.02, zp 128) -> per-channel int8 depthwise
    conv (scales 0.001..0.05, bias) -> Relu -> uint8 output QDQ (scale 0.05)."""
    rng = np.random.default_rng(seed)
    w_scale = np.geomspace(0.001, 0.05, channels).astype(np.float32)
    w_q = rng.integers(-127, 128, size=(channels, channels // groups, k, k)).astype(np.int8)
    inits, nodes = _qdq("x", 0.02, x_zp, x_dtype)
    inits += [nh.from_array(w_q, "w_q"), nh.from_array(w_scale, "w_s"),
              nh.from_array(np.full(channels, w_zp, np.int8), "w_z"),
              nh.from_array(rng.normal(0, 0.5, channels).astype(np.float32), "bias")]
    nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w_dq"], axis=0))
    nodes.append(helper.make_node("Conv", ["x_dq", "w_dq", "bias"], ["c"], group=groups,
                                  pads=[pads] * 4, strides=[stride, stride], kernel_shape=[k, k]))
    out_hw = (hw + 2 * pads - k) // stride + 1
    last = "c"
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["r"]))
        last = "r"
    out_inits, out_nodes = _qdq(last, 0.05, 0 if relu else 128, np.uint8)
    out_nodes[-1].output[0] = "y"
    graph = helper.make_graph(
        nodes + out_nodes, "qdq_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, out_hw, out_hw])],
        inits + out_inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def gemm_model(k=32, n=10, trans_b=True, x_zp=3, seed=0) -> onnx.ModelProto:
    """int8 input (zp 3) -> Gemm with per-column int8 weights -> fp32 output."""
    rng = np.random.default_rng(seed)
    shape = (n, k) if trans_b else (k, n)
    w_q = rng.integers(-127, 128, size=shape).astype(np.int8)
    w_scale = rng.uniform(0.002, 0.02, n).astype(np.float32)
    inits, nodes = _qdq("x", 0.03, x_zp, np.int8)
    inits += [nh.from_array(w_q, "w_q"), nh.from_array(w_scale, "w_s"), nh.from_array(np.zeros(n, np.int8), "w_z"),
              nh.from_array(rng.normal(0, 0.3, n).astype(np.float32), "bias")]
    nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w_dq"], axis=0 if trans_b else 1))
    nodes.append(helper.make_node("Gemm", ["x_dq", "w_dq", "bias"], ["y"], transB=int(trans_b)))
    graph = helper.make_graph(nodes, "qdq_gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def ort_run(model: onnx.ModelProto, feed: dict, fused: bool = False) -> list:
    """onnxruntime's outputs: the QDQ graph op by op (the ONNX semantics; exact on every
    CPU), or with ``fused=True`` its int8 kernels (tests/ort_reference.py says when those
    saturate)."""
    import ort_reference

    return ort_reference.run(model, feed, fused=fused)


def run_under_qemu(model: onnx.ModelProto, target: str, x, tmp_path, qemu_cpu: str | None = None):
    """Compile the QDQ ``model`` (input ``x``) for an aarch64 ``target`` without tuning records,
    run it under qemu-aarch64 and return (the compile result, its output 0, onnxruntime's
    output 0). Skips without the aarch64 cross compiler or qemu-user."""
    import pytest
    from lwc import cross_runtime, driver

    if not (cross_runtime.cross_compiler_available() and cross_runtime.qemu_available()):
        pytest.skip("needs g++-aarch64-linux-gnu and qemu-user")
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    result = driver.compile(str(path), target, use_tuning_logs=False)
    so = result.export(tmp_path / "model.so")
    [got], _ = cross_runtime.run_aarch64(so, [("x", x)], timeout_s=300, qemu_cpu=qemu_cpu)
    return result, got, ort_run(model, {"x": x})[0]
