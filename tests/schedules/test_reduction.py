"""Reduction rule: softmax, layer norm (as ONNX ops), global mean; rows in parallel when
large, all blocks of a row under one loop, injective parts vectorized; numerics."""

from __future__ import annotations

import pytest
from onnx import helper
from schedules_support import AVX2, check_numerics, model, prim_scripts, rand, schedule


def softmax_model(rows, cols):
    return model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], {"x": [1, rows, cols]}, {"y": [1, rows, cols]})


def layer_norm_model(rows, cols):
    node = helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-5)
    inits = {"g": rand(cols, seed=4), "b": rand(cols, seed=5)}
    return model([node], {"x": [1, rows, cols]}, {"y": [1, rows, cols]}, inits, opset=17)


def mean_model(c, hw):
    node = helper.make_node("GlobalAveragePool", ["x"], ["y"])
    return model([node], {"x": [1, c, *hw]}, {"y": [1, c, 1, 1]})


CASES = {
    "softmax": (softmax_model(40, 96), [1, 40, 96]),
    "layer norm": (layer_norm_model(40, 120), [1, 40, 120]),
    "global mean": (mean_model(64, (14, 14)), [1, 64, 14, 14]),
    "global mean, rows of 96": (mean_model(200, (2, 96)), [1, 200, 2, 96]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_reduction_matches_onnxruntime(case):
    m, shape = CASES[case]
    report = check_numerics(m, {"x": rand(*shape)})
    assert report.get("reduction", 0) >= 1, report


def test_large_softmax_rows_run_in_parallel():
    sched, report, _ = schedule(softmax_model(4096, 512), AVX2)
    assert report.get("reduction", 0) >= 1, report
    sm = next(s for s in prim_scripts(sched).values() if "T_softmax" in s or "softmax" in s)
    assert "T.parallel(" in sm
    assert "T.vectorized(" in sm
    assert sm.count("T.parallel(") == 1  # one fork/join for all blocks of the kernel


def test_small_softmax_stays_serial():
    sched, _, _ = schedule(softmax_model(4, 16), AVX2)
    sm = next(s for s in prim_scripts(sched).values() if "softmax" in s)
    assert "T.parallel(" not in sm


def test_mean_over_contiguous_rows_keeps_vector_partial_sums():
    """PP-OCR cls's squeeze-excite mean (rows of 96): lanes partial sums in one vector
    (rfactor), added at the end; a row of 14 (not a multiple of 8 lanes) stays serial."""
    sched, _, _ = schedule(mean_model(200, (2, 96)), AVX2)
    text = next(s for s in prim_scripts(sched).values() if "_rf" in s)
    assert "T.vectorized(T.int64(8))" in text
    sched, _, _ = schedule(mean_model(64, (14, 14)), AVX2)
    assert not any("_rf" in s for s in prim_scripts(sched).values())
