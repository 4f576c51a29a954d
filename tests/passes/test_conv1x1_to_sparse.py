"""Conv1x1ToSparse: BSR kernel for 1x1 convolutions with block-sparse constant weights."""

from __future__ import annotations

import shutil

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lwc import prune
from lwc.frontend import import_model
from lwc.passes._support import op_counts
from lwc.passes.conv1x1_to_sparse import Conv1x1ToSparse
from tests.conftest import TOL


def conv_model(batch=1, ci=16, co=32, h=6, w=8, kernel=1, stride=1, group=1, pad=0, seed=0):
    """Conv(+bias) -> Relu, NCHW."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((co, ci // group, kernel, kernel)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(co).astype(np.float32), "b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[kernel, kernel],
                         strides=[stride, stride], group=group, pads=[pad] * 4),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    ho, wo = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, ci, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, co, ho, wo])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def pruned(model, amount=0.8, method="block:1x4"):
    return prune.prune(model, method, amount, measure=False).model


def test_structural_force_replaces_the_conv():
    mod = import_model(pruned(conv_model())).mod
    p = Conv1x1ToSparse("force")
    out = p(mod)
    (d,) = p.decisions
    assert d.used and d.block == "1x4" and d.bytes_sparse < d.bytes_dense
    assert op_counts(mod).get("relax.nn.conv2d") == 1
    assert op_counts(out).get("relax.nn.conv2d", 0) == 0
    assert any(gv.name_hint.startswith("bsr_conv1x1") for gv in out.functions)


@pytest.mark.parametrize("kwargs, reason", [
    (dict(stride=2), "stride"),
    (dict(group=2), "groups=2"),
    (dict(pad=1, h=4, w=4), "padded"),
])
def test_negative_declines_with_reason(kwargs, reason):
    mod = import_model(pruned(conv_model(**kwargs))).mod
    p = Conv1x1ToSparse("force")
    assert p(mod) is mod
    (d,) = p.decisions
    assert not d.used and reason in d.reason


def test_negative_3x3_and_dense_weights_unchanged():
    for model in (pruned(conv_model(kernel=3, h=8, w=8)), conv_model()):
        mod = import_model(model).mod
        p = Conv1x1ToSparse("force")
        assert p(mod) is mod
        assert all(not d.used for d in p.decisions)


@pytest.mark.parametrize("batch, h, w, method", [
    (1, 6, 8, "block:1x4"),  # p = 48: 16 lanes
    (2, 5, 7, "block:4x1"),  # p = 35: scalar tiles, batch 2
    (1, 12, 48, "unstructured"),  # 1x1 blocks
])
def test_numerical_matches_onnxruntime(batch, h, w, method):
    import lwc.driver
    from lwc import pipeline

    model = pruned(conv_model(batch=batch, h=h, w=w), 0.85, method)
    result = lwc.driver.compile(model, "host", sparsity="force",
                                disabled_passes=tuple(pipeline.pass_names()))
    assert "Conv1x1ToSparse" in result.passes
    x = np.random.default_rng(1).standard_normal((batch, 16, h, w)).astype(np.float32)
    (y,) = result.run({"x": x})
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, ref, **TOL["fp32"])


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("qemu-aarch64") is None or shutil.which("aarch64-linux-gnu-g++") is None,
                    reason="needs qemu-user and g++-aarch64-linux-gnu")
def test_arm64_under_qemu_matches_onnxruntime():
    """arm64: auto takes the cost model (no timing under emulation) and the BSR kernels run right."""
    import lwc.driver

    model = pruned(conv_model(batch=1, h=12, w=16), 0.9)
    result = lwc.driver.compile(model, "arm64", sparsity="auto")
    (d,) = result.extra["sparsity"]["conv1x1_to_sparse"]
    assert d["used"] and "cross target" in d["reason"]
    x = np.random.default_rng(4).standard_normal((1, 16, 12, 16)).astype(np.float32)
    (y,) = result.run({"x": x})
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, ref, **TOL["fp32"])


def test_auto_measures_the_conv_against_tvms_default_kernel():
    from lwc import sparsity_decide, sparsity_stage
    from lwc.targets import resolve

    model = pruned(conv_model(h=12, w=16), 0.9)
    _, info = sparsity_stage.apply(import_model(model), "auto", preset=resolve("host"))
    (d,) = info["conv1x1_to_sparse"]
    assert d["reason"].startswith("measured: BSR") and d["dense_schedule"] == "TVM default schedule"
    assert d["dims"] == {"b": 1, "k": 16, "n": 32, "h": 12, "w": 16}
    assert d["used"] == (d["sparse_ms"] < (1 - sparsity_decide.MIN_GAIN) * d["dense_ms"])


def test_nearly_dense_weights_stay_dense_without_measuring():
    """Above MEASURE_MAX_DENSITY BSR could only stand in for a tuned dense kernel: no timing."""
    from lwc import sparsity_decide
    from lwc.passes._bsr_rewrite import Candidate

    decide = sparsity_decide.MeasuredDecider(tvm_target=None)  # would fail if it tried to time
    cand = Candidate.__new__(Candidate)
    object.__setattr__(cand, "density", 0.97)
    verdict = decide(cand)
    assert not verdict.used and "not measured" in verdict.reason and verdict.sparse_ms is None
