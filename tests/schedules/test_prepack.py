"""Weights pre-packed at compile time (lwc.schedules.prepack): constant conv/dense weights are
re-laid out once, in the order the register tile reads them, instead of a per-call copy;
numerics against onnxruntime, and the numpy evaluation of the layout copies against TVM's
own (FoldConstant building and running them)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from lwc.schedules import apply_rules, prepack
from onnx import helper
from schedules_support import (
    AVX2,
    NEON,
    check_numerics,
    fused_module,
    model,
    prim_scripts,
    rand,
    run_lwc,
    run_ort,
)
from test_conv2d import conv_model


def _chain_model():
    """3x3 conv (13 wide: channels in the vector), depthwise 3x3, 1x1, then a dense head."""
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["a"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Conv", ["b", "W2"], ["c"], kernel_shape=[3, 3], pads=[1] * 4, group=32),
        helper.make_node("Conv", ["c", "W3", "B3"], ["d"], kernel_shape=[1, 1]),
        helper.make_node("GlobalAveragePool", ["d"], ["e"]),
        helper.make_node("Flatten", ["e"], ["f"]),
        helper.make_node("Gemm", ["f", "W4", "B4"], ["y"], transB=1),
    ]
    inits = {"W1": rand(32, 16, 3, 3, seed=1), "B1": rand(32, seed=2), "W2": rand(32, 1, 3, 3, seed=3),
             "W3": rand(64, 32, 1, 1, seed=4), "B3": rand(64, seed=5), "W4": rand(24, 64, seed=6),
             "B4": rand(24, seed=7)}
    return model(nodes, {"x": [1, 16, 13, 13]}, {"y": [1, 24]}, inits)


@pytest.mark.parametrize("facts", [AVX2, NEON], ids=["avx2", "neon"])
def test_constant_weights_are_prepacked(facts):
    m = conv_model(64, 128, (13, 13), 3, pad=1)  # channels in the vector: weights read strided
    sched, report, _ = _schedule(m, facts)
    assert report.get("conv2d") == 1, report
    scripts = prim_scripts(sched)
    assert list(scripts) == ["fused_conv2d_add_relu"]  # the copy was evaluated, then dropped
    # no copy of the weight in the kernel: it takes the [F/vi, C, R, S, vi] constant
    lanes = facts.lanes()
    assert _weight_shape(sched) == (128 // lanes, 64, 3, 3, lanes)
    assert "layout_rewrite_preproc" not in scripts["fused_conv2d_add_relu"]
    check_numerics(m, {"x": rand(1, 64, 13, 13)}, facts)


def test_weight_given_as_input_is_packed_per_call():
    node = helper.make_node("Conv", ["x", "W"], ["y"], kernel_shape=[3, 3], pads=[1] * 4)
    m = model([node], {"x": [1, 16, 13, 13], "W": [32, 16, 3, 3]}, {"y": [1, 32, 13, 13]})
    sched, report, tgt = _schedule(m, AVX2)
    assert report.get("conv2d") == 1, report
    assert _weight_shape(sched) is None
    feed = {"x": rand(1, 16, 13, 13), "W": rand(32, 16, 3, 3, seed=1)}
    for got, want in zip(run_lwc(sched, tgt, feed), run_ort(m, feed)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_chain_matches_onnxruntime_and_tvms_own_fold(monkeypatch):
    m = _chain_model()
    report = check_numerics(m, {"x": rand(1, 16, 13, 13)})
    assert report.get("conv2d") == 3 and report.get("matmul") == 1, report
    # the numpy evaluation of the layout copies gives TVM's bytes (FoldConstant builds and runs them)
    fused, _ = fused_module(m)
    ours, _ = apply_rules(fused, AVX2)

    def tvm_fold(mod):
        mod = tvm.relax.transform.SplitLayoutRewritePreproc()(mod)
        return tvm.transform.Sequential([tvm.relax.transform.FoldConstant(),
                                         tvm.relax.transform.DeadCodeElimination()])(mod)

    from lwc import schedules

    monkeypatch.setattr(schedules, "fold_prepacks", tvm_fold)
    theirs, _ = apply_rules(fused, AVX2)
    a, b = _constants(ours), _constants(theirs)
    assert len(a) >= 4 and len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_failed_layout_rewrite_falls_back_to_packing_per_call(monkeypatch):
    def fail(sch, _required=None):  # as RewriteLayout declining: only kernels with layout-free buffers
        attrs = sch.mod["main"].attrs
        if attrs is not None and prepack.LAYOUT_FREE_ATTR in attrs:
            raise prepack.PrepackFailed("declined")

    from lwc.schedules import contraction

    monkeypatch.setattr(contraction, "rewrite_weight_layout", fail)
    m = conv_model(64, 128, (13, 13), 3, pad=1)
    sched, report, _ = _schedule(m, AVX2)
    assert report.get("conv2d") == 1, report  # the same rule, not a worse one after it
    assert _weight_shape(sched) == (128, 64, 3, 3)
    check_numerics(m, {"x": rand(1, 64, 13, 13)})


def test_layout_free_params_need_a_constant_at_every_call():
    fused, _ = fused_module(_chain_model())
    free = prepack.layout_free_params(fused)
    conv = next(n for n in free if n.startswith("fused_conv2d"))
    assert free[conv] and 0 not in free[conv]  # the data input is never layout free


def _schedule(m, facts):
    fused, tgt = fused_module(m)
    sched, report = apply_rules(fused, facts)
    return sched, report, tgt


def _weight_shape(mod):
    """Shape of the largest constant (the conv weight; None without constants)."""
    consts = _constants(mod)
    return max(consts, key=lambda a: a.size).shape if consts else None


def _constants(mod) -> list[np.ndarray]:
    found = []

    def visit(expr):
        if isinstance(expr, tvm.ir.GenericConst):
            found.append(expr.value.numpy())

    tvm.relax.analysis.post_order_visit(mod["main"], visit)
    return sorted(found, key=lambda a: (a.shape, a.ravel()[:4].tolist()))
