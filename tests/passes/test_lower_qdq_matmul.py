"""LowerQdqMatmul: Gemm/MatMul with per-column int8 weights on integer kernels."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from lwc.frontend import import_model
from lwc.passes.lower_qdq_matmul import LowerQdqMatmul

from qdq_models import gemm_model, ort_run


def test_structural_gemm_lowered():
    mod = import_model(gemm_model()).mod
    p = LowerQdqMatmul()
    p(mod)
    assert p.lowered == 1 and not p.declined


def test_negative_float_input_declined():
    from onnx import TensorProto, helper

    model = gemm_model()
    # drop the input QDQ: x goes to the Gemm in fp32
    nodes = [n for n in model.graph.node if not n.output[0].startswith("x_")]
    for n in nodes:
        n.input[:] = ["x" if i == "x_dq" else i for i in n.input]
    graph = helper.make_graph(nodes, "g", model.graph.input, model.graph.output,
                              [t for t in model.graph.initializer if not t.name.startswith("x_")])
    fp_model = helper.make_model(graph, opset_imports=model.opset_import)
    fp_model.ir_version = 8
    mod = import_model(fp_model).mod
    out = LowerQdqMatmul()(mod)
    tvm.ir.assert_structural_equal(out, mod)


@pytest.mark.parametrize("trans_b", [True, False])
def test_numerical_matches_onnxruntime(trans_b):
    from lwc import driver

    model = gemm_model(trans_b=trans_b)
    result = driver.compile(model, "host")
    assert result.describe()["quantization"]["lowering"]["int8_matmul"] == 1
    x = np.random.default_rng(2).uniform(-3, 3, (4, 32)).astype(np.float32)
    np.testing.assert_allclose(result.run({"x": x})[0], ort_run(model, {"x": x})[0], rtol=1e-5, atol=1e-4)
