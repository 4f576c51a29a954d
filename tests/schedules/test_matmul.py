"""Matmul rule: MatMul (B[k, j], vector loads), Gemm with transB (B[j, k], packed per
column tile), batched MatMul, with fused bias epilogues; structure and numerics."""

from __future__ import annotations

import pytest
from onnx import helper
from schedules_support import AVX2, check_numerics, model, prim_scripts, rand, schedule


def matmul_model(m, k, n, trans_b=False, batch=None, bias=True):
    if trans_b:
        nodes = [helper.make_node("Gemm", ["x", "W", "B"], ["y"], transB=1)]
        inits = {"W": rand(n, k, seed=1), "B": rand(n, seed=2)}
        return model(nodes, {"x": [m, k]}, {"y": [m, n]}, inits)
    lead = [batch] if batch else []
    nodes = [helper.make_node("MatMul", ["x", "W"], ["t"])]
    nodes.append(helper.make_node("Add", ["t", "B"], ["y"]) if bias else helper.make_node("Identity", ["t"], ["y"]))
    inits = {"W": rand(k, n, seed=1), "B": rand(n, seed=2)}
    return model(nodes, {"x": lead + [m, k]}, {"y": lead + [m, n]}, inits)


CASES = {
    "gemm": dict(m=64, k=96, n=128),
    "gemv": dict(m=1, k=256, n=200),
    "dense NT": dict(m=8, k=64, n=96, trans_b=True),
    "batched": dict(m=25, k=48, n=48, batch=4),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matmul_matches_onnxruntime(case):
    c = CASES[case]
    shape = ([c["batch"]] if c.get("batch") else []) + [c["m"], c["k"]]
    report = check_numerics(matmul_model(**c), {"x": rand(*shape)})
    assert report.get("matmul", 0) == 1, report


def test_matmul_is_register_tiled():
    sched, report, _ = schedule(matmul_model(256, 256, 256), AVX2)
    assert report.get("matmul") == 1, report
    mm = next(s for s in prim_scripts(sched).values() if "matmul" in s)
    assert "T.parallel(" in mm
    assert any(f"T.vectorized(T.int64({k * 8}))" in mm for k in (1, 2, 4))  # AVX2 vectors of columns
    assert "T.unroll(" in mm  # rows of the register tile


def test_gemm_trans_b_is_vectorized():
    # TVM's importer transposes the constant weight at compile time (folded), so the
    # kernel sees B[k, j]; either way the column tile must be vectorized.
    sched, report, _ = schedule(matmul_model(8, 64, 96, trans_b=True), AVX2)
    assert report.get("matmul") == 1, report
    mm = next(s for s in prim_scripts(sched).values() if "matmul" in s)
    assert "T.vectorized(" in mm
