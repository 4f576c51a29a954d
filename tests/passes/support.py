"""Helpers for the pass tests: tiny ONNX graphs, running lwc vs onnxruntime, tolerances."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import tvm
from onnx import TensorProto, helper

from lwc import driver
from lwc.frontend import import_model
from lwc.options import CompileOptions

#: The one tolerance table for numerical pass tests (fp32: tight).
TOLERANCE = {"float32": {"rtol": 1e-5, "atol": 1e-5}}


def tensor(name: str, array: np.ndarray) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.FLOAT, array.shape, array.astype(np.float32).ravel())


def model(nodes, inputs: dict, outputs: dict, inits=(), opset: int = 13) -> onnx.ModelProto:
    """An ONNX model from nodes, {input: shape}, {output: shape} and initializers."""
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        list(inits),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def relax_module(onnx_model: onnx.ModelProto):
    """The Relax module lwc's passes see for ``onnx_model``."""
    return import_model(onnx_model).mod


def run_both(onnx_model: onnx.ModelProto, inputs: dict[str, np.ndarray], disabled=(), **options):
    """(onnxruntime outputs, lwc outputs) for the same inputs, every pass on."""
    ref = ort.InferenceSession(onnx_model.SerializeToString()).run(None, inputs)
    opts = CompileOptions(disabled_passes=tuple(disabled), **options)
    got = driver.compile(onnx_model, "host", options=opts).run(inputs)
    return ref, got


def assert_matches_onnxruntime(onnx_model, inputs, disabled=(), **options) -> None:
    """lwc (every pass on, ``options``: :class:`lwc.options.CompileOptions` fields) within
    the fp32 tolerance of onnxruntime."""
    ref, got = run_both(onnx_model, inputs, disabled, **options)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, **TOLERANCE["float32"])


def assert_unchanged(pass_obj, mod) -> None:
    tvm.ir.assert_structural_equal(pass_obj(mod), mod)
